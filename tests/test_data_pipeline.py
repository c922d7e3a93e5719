"""tf.data pipelines on tiny images whose pixels encode their labels (red = 20 * label)."""

import cv2
import numpy as np
import pytest

from segcli.data import Augment, ClassMap, Pair, make_pipeline

CLASSES = ClassMap(tuple("abcdefgh"), tuple((i, i, i) for i in range(1, 9)), ignore_index=255)
LABELS = {0, 3, 7, 255}


def write_pairs(root, n=4, size=(16, 24)):
    """n pairs; label blocks of 0/3/7/void, and the image's red channel is 20 * label (void: 250)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(n):
        h, w = size if isinstance(size, tuple) else size[i]
        labels = np.kron(rng.choice(sorted(LABELS), (h // 4, w // 4)), np.ones((4, 4))).astype(np.uint8)
        image = np.zeros((h, w, 3), np.uint8)
        image[..., 0] = np.where(labels == 255, 250, labels * 20)
        image[..., 1] = np.arange(w)[None, :] * 10  # left-to-right ramp, to see flips
        cv2.imwrite(str(root / f"{i}.png"), image[..., ::-1])
        cv2.imwrite(str(root / f"{i}_mask.png"), labels)
        pairs.append(Pair(root / f"{i}.png", root / f"{i}_mask.png"))
    return pairs


def batches(pairs, **kw):
    kw.setdefault("batch_size", 2)
    kw.setdefault("training", True)
    return [(x.numpy(), y.numpy()) for x, y in make_pipeline(pairs, CLASSES, "index", **kw)]


def test_shapes_dtypes_and_label_set_after_augmentation(tmp_path):
    pairs = write_pairs(tmp_path)
    out = batches(pairs, augment=Augment(scale=(0.5, 2.0), crop=(12, 20)), seed=3)
    assert len(out) == 2
    for images, labels in out:
        assert images.shape == (2, 12, 20, 3) and images.dtype == np.float32
        assert labels.shape == (2, 12, 20) and labels.dtype == np.int32
        assert set(np.unique(labels)) <= LABELS  # nearest-neighbour labels: nothing interpolated
        assert 0 <= images.min() and images.max() <= 255


def test_short_side_resize(tmp_path):
    (images, labels), = batches(write_pairs(tmp_path, n=1), batch_size=1, augment=Augment(short_side=(32, 32),
                                                                                        flip=False))
    assert labels.shape == (1, 32, 48) and set(np.unique(labels)) <= LABELS


def test_crop_padding_uses_ignore_index(tmp_path):
    (images, labels), = batches(write_pairs(tmp_path, n=2), augment=Augment(crop=(24, 32), flip=False))
    assert (labels[:, 16:] == 255).all() and (labels[:, :, 24:] == 255).all()
    assert (images[:, 16:] == 0).all() and (images[:, :, 24:] == 0).all()
    assert set(np.unique(labels[:, :16, :24])) <= LABELS


def test_scale_then_crop_interpolates_only_the_window():
    """The training crop of a rescaled image is computed directly (only the window's pixels): the geometry
    is the resize's with corners aligned, labels are nearest, and a resized image smaller than the crop is
    padded at the bottom/right."""
    import tensorflow as tf

    from segcli.data.tfdata import crop_window, resized_crop

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (6, 8, 3)).astype(np.uint8)
    label = rng.integers(0, 4, (6, 8)).astype(np.int32)
    # resized to its own size, centre window: exactly the plain crop
    same = resized_crop(image, label, tf.constant([6, 8]), (4, 6), 255)
    plain = crop_window(tf.constant(image), tf.constant(label), (4, 6), 255)
    np.testing.assert_allclose(same[0].numpy(), plain[0].numpy(), atol=1e-2)  # 0..255
    np.testing.assert_array_equal(same[1].numpy(), plain[1].numpy())
    # resized to 16x22, so resized pixel (r, c) sits at source (r / 3, c / 3); centre window 5x7 from (5, 7)
    up_image, up_label = (t.numpy() for t in resized_crop(image, label, tf.constant([16, 22]), (5, 7), 255))
    ys, xs = np.arange(5, 10) / 3, np.arange(7, 14) / 3
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, 5), np.minimum(x0 + 1, 7)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    src = image.astype(np.float64)
    bilinear = ((1 - fy) * ((1 - fx) * src[y0][:, x0] + fx * src[y0][:, x1])
                + fy * ((1 - fx) * src[y1][:, x0] + fx * src[y1][:, x1]))
    np.testing.assert_allclose(up_image, bilinear, atol=1e-2)
    nearest = label[np.floor(ys + 0.5).astype(int)][:, np.floor(xs + 0.5).astype(int)]  # no ties at thirds
    np.testing.assert_array_equal(up_label, nearest)
    # resized to 3x4, smaller than the 5x6 crop: the rest is padding
    small_image, small_label = (t.numpy() for t in resized_crop(image, label, tf.constant([3, 4]), (5, 6), 255))
    assert (small_label[3:] == 255).all() and (small_label[:, 4:] == 255).all()
    assert (small_image[3:] == 0).all() and (small_image[:, 4:] == 0).all()
    assert set(np.unique(small_label[:3, :4])) <= {0, 1, 2, 3}


def test_flip_moves_image_and_mask_together(tmp_path):
    out = batches(write_pairs(tmp_path, n=8), augment=Augment(flip=True), seed=0)
    flipped = 0
    for images, labels in out:
        red = np.where(labels == 255, 250, labels * 20)
        assert np.array_equal(images[..., 0], red)  # labels and pixels still line up
        flipped += int((images[:, 0, 0, 1] > images[:, 0, -1, 1]).sum())  # ramp now runs right-to-left
    assert 0 < flipped < 8


def test_same_seed_same_batches(tmp_path):
    pairs = write_pairs(tmp_path, n=6)
    aug = Augment(scale=(0.7, 1.4), crop=(12, 12))
    first, again, other = (batches(pairs, augment=aug, seed=s) for s in (5, 5, 6))
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first, again))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other))


def test_void_as_class(tmp_path):
    pairs = write_pairs(tmp_path, n=2)
    (_, plain), = batches(pairs, training=False)
    (_, mapped), = batches(pairs, training=False, void_as_class=True, crop=(20, 24))
    assert set(np.unique(mapped[:, :16])) == {0, 3, 7, 8}  # void -> class K = 8
    assert np.array_equal(mapped[:, :16], np.where(plain == 255, 8, plain))
    assert (mapped[:, 16:] == 255).all()  # padding stays ignored


@pytest.mark.parametrize("cache", [True, False])
def test_eval_mixed_sizes_and_pad_to_multiple(tmp_path, cache):
    pairs = write_pairs(tmp_path, n=2, size=[(16, 24), (20, 12)])
    one = batches(pairs, batch_size=1, training=False, cache=cache)
    assert [y.shape for _, y in one] == [(1, 16, 24), (1, 20, 12)]
    (images, labels), = batches(pairs, training=False, pad_to_multiple=16, cache=cache)
    assert labels.shape == (2, 32, 32) and images.shape == (2, 32, 32, 3)
    assert (labels[0, 16:] == 255).all() and (labels[1, :, 12:] == 255).all()


def test_eval_short_side_then_centre_crop(tmp_path):
    (images, labels), = batches(write_pairs(tmp_path, n=1), batch_size=1, training=False,
                                eval_short_side=32, crop=(32, 40))
    assert labels.shape == (1, 32, 40) and set(np.unique(labels)) <= LABELS
