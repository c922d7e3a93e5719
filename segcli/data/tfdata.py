"""The tf.data input pipeline: decode (cv2, in parallel) -> cache -> shuffle -> augment -> batch -> prefetch.

Reached through segcli.data.pipeline.make_pipeline (the TensorFlow backend's engine, or engine="tfdata"); the
NumPy/OpenCV loader (segcli.data.loader) does the same without TensorFlow.
Batches are `(images float32 (B, H, W, 3) in 0..255, labels int32 (B, H, W))`; pixels that are not
scored (void, padding) carry the classes' ignore_index.
"""

from __future__ import annotations

import tensorflow as tf

from segcli.data.classes import ClassMap
from segcli.data.imageio import read_image
from segcli.data.masks import load_labels
from segcli.data.options import PipelineOptions, resolve
from segcli.sizes import round_up

__all__ = ["make_pipeline"]

AUTOTUNE = tf.data.AUTOTUNE


def _resize(image, label, size):
    image = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear")  # float input: faster kernel
    label = tf.image.resize(label[..., None], size, method="nearest")[..., 0]  # labels never interpolate
    return image, label


def _scaled_size(hw, factor):
    return tf.cast(tf.round(tf.cast(hw, tf.float32) * factor), tf.int32)


def _pad_at_least(image, label, min_hw, pad_label):
    """Pad at the bottom/right to at least min_hw: image with 0, labels with pad_label."""
    hw = tf.shape(label)
    extra = tf.maximum(tf.convert_to_tensor(min_hw, tf.int32) - hw, 0)
    image = tf.pad(image, [[0, extra[0]], [0, extra[1]], [0, 0]])
    label = tf.pad(label, [[0, extra[0]], [0, extra[1]]], constant_values=pad_label)
    return image, label


def _window_start(size, crop, seed, offset):
    """First row/column of a crop window: random with a seed, else central; 0 where size < crop (padded)."""
    room = tf.maximum(size - crop, 0)
    if seed is None:
        return room // 2
    return tf.random.stateless_uniform([], seed + [0, offset], 0, room + 1, dtype=tf.int32)


def crop_window(image, label, crop, pad_label, seed=None):
    """A crop of `crop` (H, W): random with a seed, else central; padded first where the image is smaller."""
    image, label = _pad_at_least(image, label, crop, pad_label)
    hw = tf.shape(label)
    top, left = (_window_start(hw[i], crop[i], seed, i) for i in (0, 1))
    image = image[top:top + crop[0], left:left + crop[1]]
    label = label[top:top + crop[0], left:left + crop[1]]
    image.set_shape([crop[0], crop[1], 3])
    label.set_shape([crop[0], crop[1]])
    return image, label


def resized_crop(image, label, size, crop, pad_label, seed=None):
    """The `crop` window of the image resized to `size`, interpolating only the crop's pixels.

    What _resize then crop_window give, but without the whole resized image: on the tutorial's 400-600 px
    short-side augmentation that image is up to 3x the crop, and resizing it cost the training loop about
    6% on the project's 2-core AMD EPYC. The samples sit with corners aligned (resized pixel r at source r * (H - 1) /
    (size - 1)) where tf.image.resize centres them, a sub-pixel difference. Where the resized image is
    smaller than the crop, the bottom/right are padded (image 0, labels pad_label), as crop_window pads.
    """
    ends = []
    for i in (0, 1):  # normalised source coordinates (0..1 = first..last pixel) of the window's first and last
        top = _window_start(size[i], crop[i], seed, i)
        # a hair under 1 / (size - 1): float rounding must not push the last real pixel past the image's
        # edge, where crop_and_resize would fill in padding
        per_pixel = (1.0 - 1e-6) / tf.cast(tf.maximum(size[i] - 1, 1), tf.float32)
        ends.append((tf.cast(top, tf.float32) * per_pixel, tf.cast(top + crop[i] - 1, tf.float32) * per_pixel))
    boxes = tf.stack([ends[0][0], ends[1][0], ends[0][1], ends[1][1]])[None]  # [y1, x1, y2, x2]
    image = tf.image.crop_and_resize(tf.cast(image, tf.float32)[None], boxes, [0], crop, method="bilinear")[0]
    label = tf.image.crop_and_resize(tf.cast(label, tf.float32)[None, ..., None], boxes, [0], crop,
                                     method="nearest", extrapolation_value=float(pad_label))[0, ..., 0]
    image.set_shape([crop[0], crop[1], 3])
    label.set_shape([crop[0], crop[1]])
    return image, tf.cast(label, tf.int32)


def make_pipeline(pairs, classes: ClassMap, encoding: str, options: PipelineOptions) -> tf.data.Dataset:
    """A tf.data.Dataset of (images float32 (B,H,W,3) 0..255, labels int32 (B,H,W)) batches: see
    segcli.data.pipeline.make_pipeline. Deterministic: augmentation uses stateless random ops.
    shard (index, count): each global batch is built whole, then this process keeps its slice."""
    s = resolve(pairs, classes, options)
    batch_size, training, pad_to_multiple = options.batch_size, options.training, options.pad_to_multiple
    eval_short_side, seed, void_as_class = options.eval_short_side, options.seed, options.void_as_class
    repeat, start = options.repeat, options.start
    pairs, aug, crop, random_crop, shuffle, pad_label = s.pairs, s.aug, s.crop, s.random_crop, s.shuffle, s.pad_label
    k, ignore = classes.num_classes, classes.ignore_index
    label_dtype, use_cache = tf.as_dtype(s.label_dtype), s.use_cache

    mapping = options.label_mapping

    def load(index):  # pairs travel through tf.data as their indices: a pair may carry a reader, not a path
        pair = pairs[int(index)]
        image = read_image(pair.image)
        label = load_labels(pair, encoding, classes, mapping, image.shape[:2])
        return image, label.astype(label_dtype.as_numpy_dtype, copy=False)

    def decode(index):
        image, label = tf.numpy_function(load, [index], [tf.uint8, label_dtype], stateful=False)
        image.set_shape([None, None, 3])
        label.set_shape([None, None])
        return image, label

    def transform(example, rand):
        image, label = example[0], tf.cast(example[1], tf.int32)  # image: uint8 until resized or the end
        if void_as_class:
            label = tf.where(label == ignore, k, label)
        seeds = [tf.stack([rand, tf.constant(i, tf.int64)]) for i in range(3)]
        hw = tf.shape(label)
        size = None  # the size to resize to, if any
        if aug and aug.short_side:
            side = tf.random.stateless_uniform([], seeds[0], aug.short_side[0], aug.short_side[1] + 1, dtype=tf.int32)
            size = _scaled_size(hw, tf.cast(side, tf.float32) / tf.cast(tf.reduce_min(hw), tf.float32))
        elif aug and aug.scale != (1.0, 1.0):
            size = _scaled_size(hw, tf.random.stateless_uniform([], seeds[0], aug.scale[0], aug.scale[1]))
        elif not training and eval_short_side:
            image, label = _resize(image, label, _scaled_size(hw, eval_short_side /
                                                              tf.cast(tf.reduce_min(hw), tf.float32)))
        crop_seed = seeds[1] if random_crop else None
        if size is not None and crop:
            image, label = resized_crop(image, label, size, crop, pad_label, crop_seed)
        elif size is not None:
            image, label = _resize(image, label, size)
        elif crop:
            image, label = crop_window(image, label, crop, pad_label, crop_seed)
        if aug and aug.flip:
            flip = tf.random.stateless_uniform([], seeds[2]) < 0.5
            image, label = tf.cond(flip, lambda: (image[:, ::-1], label[:, ::-1]), lambda: (image, label))
        if pad_to_multiple > 1:
            hw = tf.shape(label)
            image, label = _pad_at_least(image, label, round_up(hw, pad_to_multiple), pad_label)
        return tf.cast(image, tf.float32), label

    ds = tf.data.Dataset.from_tensor_slices(tf.range(len(pairs), dtype=tf.int64))
    if use_cache:
        ds = ds.map(decode, num_parallel_calls=AUTOTUNE).cache()
    if shuffle:  # cached: the decoded images; streaming: the pair indices (decoded after the skip below)
        ds = ds.shuffle(len(pairs), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip((ds, randoms))
    if start:  # the samples of the batches before `start`: none is augmented (nor, streaming, decoded)
        ds = ds.skip(start * batch_size)
    if not use_cache:  # streaming: decode and augment in one step
        ds = ds.map(lambda index, rand: transform(decode(index), rand), num_parallel_calls=AUTOTUNE)
    else:
        ds = ds.map(transform, num_parallel_calls=AUTOTUNE)
    ds = ds.padded_batch(batch_size, padding_values=(0.0, pad_label), drop_remainder=training)
    if s.shard[1] > 1:  # this process's contiguous slice of each global batch (padded to the whole batch's size)
        lo, hi = s.shard_slice
        ds = ds.map(lambda images, labels: (images[lo:hi], labels[lo:hi]))
    options = tf.data.Options()
    options.deterministic = True
    return ds.prefetch(AUTOTUNE).with_options(options)
