"""The NumPy/OpenCV loader (segcli.data.loader) against the tf.data pipeline, and its own promises: the same
batches per seed whatever the threads, shards that add up to the unsharded batches, no TensorFlow needed."""


import cv2
import numpy as np
import pytest

from segcli.data import Augment, ClassMap, Pair, make_pipeline
from segcli.data.loader import make_loader

from conftest import run_on_backend

CLASSES = ClassMap(tuple("abcdefgh"), tuple((i, i, i) for i in range(1, 9)), ignore_index=255)
LABELS = {0, 3, 7, 255}


def write_pairs(root, sizes=((16, 24),) * 4):
    """One pair per size: 4x4 blocks of labels 0/3/7/void; red = 20 * label (void 250), green = 10 * column,
    blue = 10 * row + 5 (never 0, so padding shows)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pairs = []
    for i, (h, w) in enumerate(sizes):
        labels = np.kron(rng.choice(sorted(LABELS), (h // 4, w // 4)), np.ones((4, 4))).astype(np.uint8)
        image = np.zeros((h, w, 3), np.uint8)
        image[..., 0] = np.where(labels == 255, 250, labels * 20)
        image[..., 1] = np.arange(w)[None, :] * 10
        image[..., 2] = np.arange(h)[:, None] * 10 + 5
        cv2.imwrite(str(root / f"{i}.png"), image[..., ::-1])
        cv2.imwrite(str(root / f"{i}_mask.png"), labels)
        pairs.append(Pair(root / f"{i}.png", root / f"{i}_mask.png"))
    return pairs


def run(pairs, engine="numpy", **kw):
    """All batches of one pass (or the first `take` of an endless one) as NumPy arrays."""
    kw.setdefault("batch_size", 2)
    kw.setdefault("training", True)
    take = kw.pop("take", None)
    ds = make_pipeline(pairs, CLASSES, "index", engine=engine, **kw)
    it = iter(ds)
    out = []
    for x, y in it:
        out.append((np.asarray(x), np.asarray(y)))
        if take and len(out) == take:
            break
    return out


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, u) and np.array_equal(y, v) for (x, y), (u, v) in zip(a, b))


@pytest.mark.parametrize("kw", [
    dict(),  # whole images
    dict(pad_to_multiple=16),
    dict(crop=(12, 16)),  # centre crop of the larger, padded on the smaller
    dict(crop=(20, 20), void_as_class=True, pad_to_multiple=8),
], ids=["whole", "pad-multiple", "centre-crop", "void-as-class"])
def test_eval_without_resizing_equals_tfdata(tmp_path, kw):
    pairs = write_pairs(tmp_path, [(16, 24), (20, 12), (8, 8)])
    loader, tfdata = (run(pairs, engine, training=False, **kw) for engine in ("numpy", "tfdata"))
    assert len(loader) == 2 and loader[1][1].shape[0] == 1  # the last batch is partial in eval
    assert same(loader, tfdata)
    assert loader[0][0].dtype == np.float32 and loader[0][1].dtype == np.int32


def test_eval_short_side_matches_tfdata(tmp_path):
    """Resized: the same sizes, the same (nearest, half-pixel) labels; pixels differ by uint8 rounding only."""
    pairs = write_pairs(tmp_path, [(16, 24), (20, 12)])
    for kw in (dict(eval_short_side=37), dict(eval_short_side=30, crop=(24, 28))):
        loader, tfdata = (run(pairs, engine, training=False, batch_size=1, **kw) for engine in ("numpy", "tfdata"))
        for (x, y), (u, v) in zip(loader, tfdata):
            assert x.shape == u.shape and np.array_equal(y, v)
            assert np.abs(x - u).max() <= 1.0


def test_training_flip_and_crop_like_tfdata(tmp_path):
    """Different draws, the same kind of batches: shapes, count, label sets; labels and pixels still line up."""
    pairs = write_pairs(tmp_path, [(16, 24)] * 5)
    kw = dict(augment=Augment(crop=(12, 20), flip=True), seed=1)
    loader, tfdata = (run(pairs, engine, **kw) for engine in ("numpy", "tfdata"))
    assert [x.shape for x, _ in loader] == [x.shape for x, _ in tfdata] == [(2, 12, 20, 3)] * 2  # full batches
    assert set(np.unique(np.concatenate([y for _, y in loader]))) == set(
        np.unique(np.concatenate([y for _, y in tfdata])))
    flipped = 0
    for images, labels in loader:
        assert np.array_equal(images[..., 0], np.where(labels == 255, 250, labels * 20))
        green = images[..., 1]
        flipped += int((green[:, 0, 0] > green[:, 0, -1]).sum())
        assert (np.abs(np.diff(green, axis=2)) == 10).all()  # whole columns, in order one way or the other
    assert 0 < flipped < 4


def test_padded_crops_carry_the_ignore_label(tmp_path):
    pairs = write_pairs(tmp_path, [(16, 24)] * 4)
    out = run(pairs, augment=Augment(crop=(24, 32), flip=True), seed=0)
    flipped = 0
    for images, labels in out:
        assert (labels[:, 16:] == 255).all() and (images[:, 16:] == 0).all()  # below the image
        for image, label in zip(images, labels):
            flip = bool(image[0, 0, 2] == 0)  # padding on the left: the window (image + padding) was flipped
            flipped += flip
            pad = np.s_[:, :8] if flip else np.s_[:, 24:]
            assert (label[:16][pad] == 255).all() and (image[:16][pad] == 0).all()  # a flip moves it left
            assert (image[:16, :, 2] > 0).sum() == 16 * 24  # every image pixel is there once
    assert 0 < flipped < 4
    # void as class K = 8: padding stays ignored (255), void pixels become 8
    (_, labels), = run(pairs[:2], training=False, crop=(24, 32), void_as_class=True)
    assert (labels[:, 16:] == 255).all() and (labels[:, :, 24:] == 255).all()
    assert set(np.unique(labels[:, :16, :24])) == {0, 3, 7, 8}


def test_labels_are_never_interpolated(tmp_path):
    pairs = write_pairs(tmp_path, [(16, 24), (20, 12), (24, 24)])
    for augment in (Augment(scale=(0.37, 2.9), crop=(20, 20)), Augment(scale=(0.5, 1.7)),
                    Augment(short_side=(9, 41), crop=(16, 16), center_crop=True)):
        for images, labels in run(pairs, batch_size=1, augment=augment, seed=3):
            assert set(np.unique(labels)) <= LABELS


def test_same_seed_same_batches_whatever_the_workers(tmp_path):
    """Endless (repeat): 5 passes of 5 pairs in batches of 2 straddle the pass ends; every batch is the same
    with 1 or 3 threads, cached or not; another seed gives others; each pass has every pair once."""
    pairs = write_pairs(tmp_path, [(16, 24), (20, 12), (8, 8), (24, 20), (12, 12)])
    aug = Augment(scale=(0.6, 1.6), crop=(12, 12), flip=True)

    def take(seed, workers, cache=True):
        ds = make_loader(pairs, CLASSES, "index", batch_size=2, training=True, augment=aug, seed=seed,
                         repeat=True, workers=workers, cache=cache)
        assert ds.num_batches is None
        it = iter(ds)
        return [next(it) for _ in range(12)]

    first = take(5, 1)
    assert same(first, take(5, 3)) and same(first, take(5, 3, cache=False))
    assert not same(first, take(6, 1))
    # the order of each pass: a permutation (the blue ramp tells the pairs apart by height)
    plain = make_loader(pairs, CLASSES, "index", batch_size=5, training=True, repeat=True, workers=1)
    heights = [[int((x[:, 0, 2] > 0).sum()) for x in plain.batch(i)[0]] for i in range(3)]
    assert all(sorted(h) == [8, 12, 16, 20, 24] for h in heights) and heights[0] != heights[1]


def test_a_finite_pass_reshuffles_and_keras_gets_the_same_batches(tmp_path):
    """Each pass (iter() or on_epoch_end) is a new order; Keras' fit path (EpochIterator with steps_per_epoch
    over an endless loader, 3 threads, 2 epochs) yields the loader's own batches in order."""
    from keras.src.trainers.epoch_iterator import EpochIterator

    pairs = write_pairs(tmp_path, [(16, 24)] * 6)
    aug = Augment(crop=(12, 12), flip=True)
    ds = make_loader(pairs, CLASSES, "index", batch_size=2, training=True, augment=aug, workers=1)
    one, two = (list(ds) for _ in range(2))
    assert len(one) == 3 and not same(one, two)
    assert same(two, [ds.batch(i, epoch=1) for i in range(3)])
    endless = make_loader(pairs, CLASSES, "index", batch_size=4, training=True, augment=aug, repeat=True,
                          workers=3)
    seen = []
    iterator = EpochIterator(endless, steps_per_epoch=2)
    for _ in range(2):
        for _, _, batch in iterator:
            seen.extend(tuple(np.asarray(a) for a in b[:2]) for b in batch)
    assert same(seen, [endless.batch(i) for i in range(4)])


@pytest.mark.parametrize("engine", ["numpy", "tfdata"])
def test_shards_add_up_to_the_unsharded_batches(tmp_path, engine):
    """Two processes' shards, concatenated, are the unsharded pipeline's batches bit for bit: training
    (augmented, endless), eval with mixed sizes (padded to the whole global batch's largest, the last batch
    partial) and training rescaled without a crop (mixed sizes again)."""
    pairs = write_pairs(tmp_path, [(16, 24), (20, 12), (8, 8), (24, 20), (12, 12), (16, 16)])
    cases = [dict(augment=Augment(scale=(0.6, 1.6), crop=(12, 16), flip=True), seed=4, repeat=True, take=4),
             dict(training=False, pad_to_multiple=4),  # the last global batch: 2 pairs, all in shard 0
             dict(training=True, augment=Augment(scale=(0.5, 1.5)), batch_size=4, cache=False)]
    for kw in cases:
        kw.setdefault("batch_size", 4)
        whole = run(pairs, engine, **kw)
        parts = [run(pairs, engine, shard=(i, 2), **kw) for i in (0, 1)]
        assert len(whole) == len(parts[0]) == len(parts[1]) > 0
        assert parts[0][0][0].shape[0] == parts[1][0][0].shape[0] == kw["batch_size"] // 2
        for (x, y), (x0, y0), (x1, y1) in zip(whole, *parts):
            assert np.array_equal(np.concatenate([x0, x1]), x) and np.array_equal(np.concatenate([y0, y1]), y)


@pytest.mark.parametrize("engine", ["numpy", "tfdata"])
@pytest.mark.parametrize("cache", [True, False], ids=["cached", "streaming"])
def test_an_endless_stream_started_at_a_batch_is_the_rest_of_the_stream(tmp_path, engine, cache):
    """start=k (a resumed run) gives batches k, k+1, ... of the stream from 0, across pass ends (5 pairs,
    batches of 2), shuffled and augmented alike; also through Keras' own reading of a PyDataset by index."""
    pairs = write_pairs(tmp_path, [(16, 24), (20, 12), (8, 8), (24, 20), (12, 12)])
    kw = dict(augment=Augment(scale=(0.6, 1.6), crop=(12, 16), flip=True), seed=3, repeat=True, cache=cache)
    whole = run(pairs, engine, take=9, **kw)
    assert same(run(pairs, engine, take=4, start=5, **kw), whole[5:])
    if engine == "numpy":
        started = make_loader(pairs, CLASSES, "index", batch_size=2, training=True, start=5, **kw)
        assert same([started[i] for i in range(4)], whole[5:])
    with pytest.raises(ValueError, match="needs repeat"):
        make_pipeline(pairs, CLASSES, "index", batch_size=2, training=True, start=1, engine=engine)


def test_one_options_object_or_its_keywords(tmp_path):
    """Both engines take one PipelineOptions; make_pipeline and make_loader take it or its fields as keywords
    (which replace its values), and nothing else."""
    from segcli.data import PipelineOptions

    pairs = write_pairs(tmp_path)
    aug = Augment(scale=(0.6, 1.6), crop=(12, 16), flip=True)
    options = PipelineOptions(batch_size=2, training=True, augment=aug, seed=3)
    as_keywords = run(pairs, augment=aug, seed=3)
    assert same([(np.asarray(x), np.asarray(y)) for x, y in make_pipeline(pairs, CLASSES, "index", options,
                                                                          engine="numpy")], as_keywords)
    reseeded = [(np.asarray(x), np.asarray(y)) for x, y in make_loader(pairs, CLASSES, "index", options, seed=4,
                                                                       workers=1)]
    assert same(reseeded, run(pairs, augment=aug, seed=4)) and not same(reseeded, as_keywords)
    with pytest.raises(TypeError, match="bogus"):
        make_pipeline(pairs, CLASSES, "index", batch_size=2, training=True, bogus=1)


def test_shard_and_engine_checks(tmp_path):
    from segcli.data.pipeline import pipeline_engine
    from segcli.errors import DataError

    pairs = write_pairs(tmp_path, [(16, 24)] * 2)
    with pytest.raises(DataError, match="divides by count"):
        make_pipeline(pairs, CLASSES, "index", batch_size=3, training=True, shard=(0, 2), engine="numpy")
    with pytest.raises(DataError, match="shard 2 of 2"):
        make_pipeline(pairs, CLASSES, "index", batch_size=4, training=True, shard=(2, 2), engine="numpy")
    with pytest.raises(ValueError, match="unknown pipeline engine"):
        make_pipeline(pairs, CLASSES, "index", batch_size=2, training=True, engine="torch")
    import keras

    assert pipeline_engine("auto") == ("tfdata" if keras.backend.backend() == "tensorflow" else "numpy")


def test_pipeline_throughput_is_the_images_the_test_timed_over_their_seconds(tmp_path, monkeypatch):
    """On both engines: images/s of the batches after the warm-up epoch, as the test times each next() itself
    (never a speed: only that the figure says what the test measured, within a margin for the few calls between
    the two clocks)."""
    import time

    import segcli.data.pipeline
    from segcli.data import pipeline_throughput

    calls = []  # (start, end) of each next() on the pipeline

    class Timed:
        def __init__(self, ds):
            self.ds = ds

        def __iter__(self):
            it = iter(self.ds)
            while True:
                start = time.perf_counter()
                batch = next(it)
                calls.append((start, time.perf_counter()))
                yield batch

    make = segcli.data.pipeline.make_pipeline
    monkeypatch.setattr(segcli.data.pipeline, "make_pipeline", lambda *a, **kw: Timed(make(*a, **kw)))
    pairs = write_pairs(tmp_path, [(16, 24)] * 4)
    for engine in ("numpy", "tfdata"):
        calls.clear()
        rate = pipeline_throughput(pairs, CLASSES, "index", batch_size=2, batches=20, engine=engine,
                                   augment=Augment(crop=(8, 8)))
        assert len(calls) == 2 + 20, engine  # one warm-up epoch of 4 pairs, then the timed batches
        seconds = calls[-1][1] - calls[2][0]
        assert seconds * 0.9 - 1e-4 <= 20 * 2 / rate <= seconds * 1.5 + 0.01, (engine, rate, seconds)


JAX_SCRIPT = """
import sys
import numpy as np
import segcli.data.pipeline
from segcli.data import Augment, make_pipeline, open_dataset
import keras
assert keras.backend.backend() == "jax"
ds = open_dataset("sample_data")
train = make_pipeline(ds.splits["train"], ds.classes, ds.encoding, batch_size=4, training=True, repeat=True,
                      augment=Augment(scale=(0.8, 1.2), crop=(64, 64)))
val = make_pipeline(ds.splits["val"][:2], ds.classes, ds.encoding, batch_size=1, training=False,
                    crop=(64, 64))
assert type(train).__name__ == "Loader", type(train)
images, labels = next(iter(train))
assert images.shape == (4, 64, 64, 3) and labels.dtype == np.int32
model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(12, 1)])
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=11))
history = model.fit(train, steps_per_epoch=2, epochs=2, validation_data=val, verbose=0)
assert len(history.history["val_loss"]) == 2
assert "tensorflow" not in sys.modules
print("ok")
"""


@pytest.mark.slow
def test_loader_trains_on_jax_without_tensorflow():
    """KERAS_BACKEND=jax with TensorFlow poisoned: import, build, iterate, and model.fit with steps_per_epoch."""
    pytest.importorskip("jax")
    result = run_on_backend("jax", "-c", JAX_SCRIPT, timeout=300)  # TensorFlow hidden from imports
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]
