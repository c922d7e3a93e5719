"""The NumPy/OpenCV input pipeline: the tf.data pipeline's batches (segcli.data.tfdata) without TensorFlow, as a
keras.utils.PyDataset, so model.fit takes it on every Keras backend. Reached through
segcli.data.pipeline.make_pipeline (engine "numpy", the default off the TensorFlow backend).

Parallel: model.fit runs `workers` threads (cv2 decodes and resizes without the GIL), each building whole
batches; iterating the loader yourself (`for images, labels in loader`) runs the same number of threads.
Deterministic whatever the threads: batch i is a pure function of (seed, i) (and, for a finite pipeline, the
pass, counted by on_epoch_end / iter()). Each pass's order is a permutation drawn from (seed, pass), and every
random draw of a sample (scale, crop window, flip) from (seed, pass, the sample's position in that order).
"""

from __future__ import annotations

import functools
import itertools
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import cv2
import keras
import numpy as np

from segcli.data.classes import ClassMap
from segcli.data.imageio import read_image
from segcli.data.masks import io_threads, load_labels
from segcli.data.options import PipelineOptions, Settings, pipeline_options, resolve
from segcli.errors import DataError
from segcli.sizes import round_up

__all__ = ["Loader", "make_loader"]


class _Plan(NamedTuple):
    """One sample's geometry: resized to `size` (None: kept), the `out` (H, W) window from (top, left) of it
    (padded at the bottom/right where it runs past the image), then flipped or not."""

    size: tuple[int, int] | None
    top: int
    left: int
    out: tuple[int, int]
    flip: bool


def _seed(seed: int) -> int:
    return int(seed) % 2 ** 64  # NumPy's seed sequences take non-negative integers


@functools.lru_cache(maxsize=8)
def _order(seed: int, epoch: int, n: int, shuffle: bool) -> np.ndarray:
    """The pairs' order in one pass: a permutation drawn from (seed, pass), or as listed."""
    return np.random.default_rng([_seed(seed), epoch]).permutation(n) if shuffle else np.arange(n)


def _scaled(hw, factor) -> tuple[int, int]:
    """hw * factor, rounded half to even in float32 (the tf.data pipeline's arithmetic: the same sizes)."""
    return tuple(max(1, int(v)) for v in np.rint(np.asarray(hw, np.float32) * np.float32(factor)))


def _nearest(start: int, count: int, src: int, dst: int) -> np.ndarray:
    """Source rows (or columns) of resized rows start..start+count: nearest with half-pixel centres, in float32
    (as tf.image.resize's "nearest"), so labels are picked, never interpolated."""
    scale = np.float32(src / dst)
    at = (np.arange(start, start + count, dtype=np.float32) + np.float32(0.5)) * scale
    return np.minimum(np.floor(at).astype(np.intp), src - 1)


def _bilinear_window(image: np.ndarray, size: tuple[int, int], top: int, left: int, h: int, w: int) -> np.ndarray:
    """Rows top..top+h, columns left..left+w of `image` resized (bilinear, half-pixel centres) to `size`,
    interpolating only those pixels (as cv2.resize then a crop, without the whole resized image)."""
    if (top, left, h, w) == (0, 0, *size):
        return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    sy, sx = image.shape[0] / size[0], image.shape[1] / size[1]
    to_source = np.array([[sx, 0.0, (left + 0.5) * sx - 0.5], [0.0, sy, (top + 0.5) * sy - 0.5]])
    return cv2.warpAffine(image, to_source, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


class Loader(keras.utils.PyDataset):
    """Batches (images float32 (B, H, W, 3) 0..255, labels int32 (B, H, W)) as NumPy arrays; see make_loader."""

    def __init__(self, settings: Settings, classes: ClassMap, encoding: str, *, workers: int, max_queue_size: int):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max_queue_size)
        self.settings, self.classes, self.encoding = settings, classes, encoding
        o = settings.options
        self.batch_size, self.training, self.repeat = o.batch_size, o.training, o.repeat
        self.pad_to_multiple, self.eval_short_side, self.seed = o.pad_to_multiple, o.eval_short_side, o.seed
        self.void_as_class = o.void_as_class
        self.start = o.start  # with repeat: the stream's batch that index 0 is
        self.epoch = 0  # the pass a finite pipeline is on (on_epoch_end and iter() move it on)
        self._cache = [None] * len(settings.pairs) if settings.use_cache else None  # decoded (image, label)
        self._hw = {}  # pair index -> (H, W) once decoded

    # --- PyDataset ------------------------------------------------------------------------------------------
    @property
    def num_batches(self) -> int | None:
        """Batches in one pass; None (endless) with repeat."""
        if self.repeat:
            return None
        n = len(self.settings.pairs)
        return n // self.batch_size if self.training else -(-n // self.batch_size)

    def __len__(self) -> int:
        if self.repeat:
            raise TypeError("an endless (repeat=True) pipeline has no length")
        return self.num_batches

    def __getitem__(self, index: int):
        return self.batch(index + self.start, self.epoch)

    def on_epoch_end(self):
        self.epoch += 1

    def __iter__(self):
        """One pass (endless with repeat), `workers` batches built at a time; each iter() starts a new pass."""
        epoch = self.epoch
        if not self.repeat:
            self.epoch += 1
        return self._iterate(epoch)

    def _iterate(self, epoch: int):
        n = self.num_batches
        indices = range(n) if n is not None else itertools.count(self.start)
        if self.workers <= 1:
            for i in indices:
                yield self.batch(i, epoch)
            return
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="segcli-loader")
        pending = deque()
        try:
            for i in indices:
                pending.append(pool.submit(self.batch, i, epoch))
                if len(pending) >= max(self.max_queue_size, self.workers):
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # also when an endless iteration is dropped
            pool.shutdown(wait=False, cancel_futures=True)

    # --- batches --------------------------------------------------------------------------------------------
    def batch(self, index: int, epoch: int = 0):
        """Batch `index` of pass `epoch` (with repeat: of the endless stream; epoch is unused)."""
        n = self.num_batches
        if index < 0 or (n is not None and index >= n):
            raise IndexError(f"batch {index} of {n}")
        members = self._members(index, epoch)
        lo, hi = self.settings.shard_slice
        mine = [self._sample(*m) for m in members[lo:hi]]
        sizes = [plan.out for _, _, plan in mine]
        if self.settings.shard[1] > 1:  # padded as the whole global batch is: to its largest, not this slice's
            sizes += [self._out_size(*m) for m in members[:lo] + members[hi:]]
        h = round_up(max(size[0] for size in sizes), self.pad_to_multiple)
        w = round_up(max(size[1] for size in sizes), self.pad_to_multiple)
        images = np.zeros((len(mine), h, w, 3), np.float32)
        labels = np.full((len(mine), h, w), self.settings.pad_label, np.int32)
        for b, (image, label, plan) in enumerate(mine):
            vh, vw = label.shape
            left = plan.out[1] - vw if plan.flip else 0  # a flip moves a padded window's padding to the left
            if plan.flip:
                image, label = image[:, ::-1], label[:, ::-1]
            images[b, :vh, left:left + vw] = image
            labels[b, :vh, left:left + vw] = label
        return images, labels

    def _members(self, index: int, epoch: int) -> list[tuple[int, int, int]]:
        """(pair index, pass, position in that pass's order) of each sample of global batch `index`."""
        n, b, s = len(self.settings.pairs), self.batch_size, self.settings
        if self.repeat:  # the passes run on, one after another; a batch may straddle two
            return [(int(_order(self.seed, j // n, n, s.shuffle)[j % n]), j // n, j % n)
                    for j in range(index * b, (index + 1) * b)]
        order = _order(self.seed, epoch, n, s.shuffle)
        return [(int(order[p]), epoch, p) for p in range(index * b, min((index + 1) * b, n))]

    def _rng(self, epoch: int, position: int) -> np.random.Generator:
        return np.random.default_rng([_seed(self.seed), epoch, position])

    def _sample(self, index: int, epoch: int, position: int):
        """(image uint8, label, plan): the window's part inside the (resized) image, not yet flipped."""
        image, label = self._load(index)
        plan = self._plan(label.shape, self._rng(epoch, position))
        h, w = plan.size or label.shape
        vh, vw = min(plan.out[0], h - plan.top), min(plan.out[1], w - plan.left)
        if plan.size is None:
            window = np.s_[plan.top:plan.top + vh, plan.left:plan.left + vw]
            return image[window], label[window], plan
        rows = _nearest(plan.top, vh, label.shape[0], h)
        cols = _nearest(plan.left, vw, label.shape[1], w)
        return _bilinear_window(image, plan.size, plan.top, plan.left, vh, vw), label[rows[:, None], cols], plan

    def _plan(self, hw: tuple[int, int], rng: np.random.Generator) -> _Plan:
        """The tf.data pipeline's transform, as sizes and draws: random scale or short side (training), else
        eval_short_side (eval); the crop window, random or central; the flip."""
        aug, crop = self.settings.aug, self.settings.crop
        hw = tuple(hw)
        size = None
        if aug and aug.short_side:
            side = rng.integers(aug.short_side[0], aug.short_side[1] + 1)
            size = _scaled(hw, np.float32(side) / np.float32(min(hw)))
        elif aug and aug.scale != (1.0, 1.0):
            size = _scaled(hw, rng.uniform(aug.scale[0], aug.scale[1]))
        elif not self.training and self.eval_short_side:
            size = _scaled(hw, np.float32(self.eval_short_side) / np.float32(min(hw)))
        h, w = size or hw
        top = left = 0
        out = (h, w)
        if crop:
            out = crop
            rooms = (max(h - crop[0], 0), max(w - crop[1], 0))
            if self.settings.random_crop:
                top, left = (int(rng.integers(0, room + 1)) for room in rooms)
            else:
                top, left = (room // 2 for room in rooms)
        flip = bool(aug and aug.flip and rng.random() < 0.5)
        return _Plan(None if size == hw else size, top, left, tuple(out), flip)

    def _out_size(self, index: int, epoch: int, position: int) -> tuple[int, int]:
        """A sample's (H, W) in its batch before padding, without its pixels where there is a crop."""
        if self.settings.crop:
            return self.settings.crop
        if index not in self._hw:
            self._load(index)
        return self._plan(self._hw[index], self._rng(epoch, position)).out

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decoded (image uint8 (H, W, 3), labels (H, W); void already class K with void_as_class), cached."""
        if self._cache is not None and self._cache[index] is not None:
            return self._cache[index]
        pair, classes = self.settings.pairs[index], self.classes
        image = read_image(pair.image)
        label = load_labels(pair, self.encoding, classes, self.settings.options.label_mapping, image.shape[:2])
        label = label.astype(self.settings.label_dtype, copy=False)
        if image.shape[:2] != label.shape:
            raise DataError(f"mask is {label.shape[0]}x{label.shape[1]} but its image is "
                            f"{image.shape[0]}x{image.shape[1]}", pair.mask)
        if self.void_as_class:
            label = np.where(label == classes.ignore_index, classes.num_classes, label).astype(label.dtype)
        self._hw[index] = label.shape
        if self._cache is not None:
            self._cache[index] = (image, label)
        return image, label


def make_loader(pairs, classes: ClassMap, encoding: str, options: PipelineOptions | None = None, *,
                workers: int | None = None, max_queue_size: int | None = None, **keywords) -> Loader:
    """A Loader (keras.utils.PyDataset) of segcli.data.pipeline.make_pipeline's batches, from `options` or its
    fields as keywords (as make_pipeline takes them). workers: threads building batches (default
    segcli.data.masks.io_threads()); max_queue_size: batches built ahead (default workers + 2). Neither changes
    a batch."""
    settings = resolve(pairs, classes, pipeline_options(options, keywords))
    workers = io_threads() if workers is None else max(1, int(workers))
    return Loader(settings, classes, encoding, workers=workers, max_queue_size=max_queue_size or workers + 2)
