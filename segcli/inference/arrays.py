"""Array-level inference: images in, labels / logits / probabilities out; no files.

Images of any size: pad to the output stride, run, crop back; overlapping tiles for big ones. Small images
(padded size within one tile) of equal size are batched together. Bigger images go through tiles of
`tile` x `tile` pixels (a multiple of the output stride) that overlap by `overlap` pixels; each output pixel is
taken from the tile whose centre region holds it (the overlap gives every tile `overlap / 2` pixels of context on
each inner side), so nothing larger than one batch of tiles is ever held as float scores: labels go into a uint8
(H, W) array, and probabilities, when asked for, into a float16 (H, W, K) array the caller provides (a
memory-mapped .npy file in `predict_files`).

Test-time augmentation (`tta=`, see `parse_tta`) runs one pass per scale and flip through the same padded /
tiled forward; its maths is in `segcli.inference.tta`. Without `tta` nothing of it runs.

"""

from __future__ import annotations

import weakref
from typing import Callable, Iterable, Iterator

import numpy as np

from segcli.errors import SegcliError
from segcli.inference.tta import TTA, parse_tta, scaled_size, tta_batch_probs, tta_probs
from segcli.inference.tta import softmax as _softmax  # predict_logits has a softmax= flag
from segcli.sizes import round_up

# At most this many pixels per model call (whatever the batch size): one 1024x1024 tile. The activations
# of a batch, not the image, set the peak memory; on CPU one big tile per call was also the fastest.
MAX_BATCH_PIXELS = 1024 * 1024


# --- running the model ----------------------------------------------------------------------------

_COMPILED: dict[int, tuple[weakref.ref, Callable]] = {}


def _compiled(model) -> Callable:
    """model(x, training=False) compiled once per tile size, cached per model: on TensorFlow a tf.function (no
    XLA: it was slower on CPUs), on JAX and PyTorch Keras' own predict_on_batch (jax.jit per input shape on JAX,
    eager under no_grad on PyTorch)."""
    import keras

    entry = _COMPILED.get(id(model))
    if entry is not None and entry[0]() is model:
        return entry[1]
    for key in [k for k, (ref, _) in _COMPILED.items() if ref() is None]:
        del _COMPILED[key]
    ref = weakref.ref(model)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        fn = tf.function(lambda x: ref()(x, training=False), reduce_retracing=True, jit_compile=False)
    else:
        fn = lambda x: ref().predict_on_batch(x)  # noqa: E731
    _COMPILED[id(model)] = (ref, fn)
    return fn


def forward(model, batch: np.ndarray) -> np.ndarray:
    """(B, h, w, 3) float32 0..255 -> (B, h, w, K) float32 logits; h and w are multiples of the stride.
    `model`: a Keras model, or an exported model's engine (segcli.inference.engines: its `run_batch`)."""
    run = getattr(model, "run_batch", None) or _compiled(model)
    out = np.asarray(run(batch.astype(np.float32, copy=False)), dtype=np.float32)
    if out.ndim != 4 or out.shape[1:3] != batch.shape[1:3]:
        raise SegcliError(f"the model returned shape {tuple(out.shape)} for input {tuple(batch.shape)}: "
                          "expected (B, H, W, classes) at the input size")
    return out


def _reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Indices past the end mirrored back into 0..n-1 (reflect without repeating the edge)."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.abs(idx) % period
    return np.where(idx < n, idx, period - idx)


def _window(image: np.ndarray, y0: int, h: int, x0: int, w: int) -> np.ndarray:
    """image[y0:y0+h, x0:x0+w] with rows/columns past the bottom/right edge reflected."""
    height, width = image.shape[:2]
    if y0 + h <= height and x0 + w <= width:
        return image[y0:y0 + h, x0:x0 + w]
    rows = _reflect_index(np.arange(y0, y0 + h), height)
    cols = _reflect_index(np.arange(x0, x0 + w), width)
    return image[rows[:, None], cols[None, :]]


def tile_geometry(stride: int, tile: int, overlap: int) -> tuple[int, int]:
    """(tile, overlap) rounded to the stride: tile down (at least one stride), overlap up (less than the tile)."""
    if tile < 1 or overlap < 0:
        raise SegcliError(f"tile must be >= 1 and overlap >= 0, got tile {tile}, overlap {overlap}")
    tile = max(stride, tile // stride * stride)
    overlap = min(round_up(overlap, stride), tile - stride)
    return tile, overlap


def axis_tiles(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(start, size, core_start, core_end) along one padded axis; cores partition 0..length."""
    if length <= tile:
        return [(0, length, 0, length)]
    step = tile - overlap
    starts = list(range(0, length - tile, step)) + [length - tile]
    cuts = [0] + [(b + a + tile) // 2 for a, b in zip(starts, starts[1:])] + [length]
    return [(s, tile, cuts[i], cuts[i + 1]) for i, s in enumerate(starts)]


def needs_tiles(height: int, width: int, *, stride: int, tile: int = 1024, overlap: int = 128) -> bool:
    """True when an image of height x width goes through more than one tile."""
    tile, _ = tile_geometry(stride, tile, overlap)
    return round_up(height, stride) > tile or round_up(width, stride) > tile


def _iter_windows(model, image: np.ndarray, stride: int, tile: int, overlap: int,
                  batch_size: int) -> Iterator[tuple[tuple, tuple, np.ndarray]]:
    """(ty, tx, logits of the whole window) for every tile, tile batch by tile batch; ty and tx are
    `axis_tiles` entries (start, size, core_start, core_end) in the padded image."""
    height, width = image.shape[:2]
    tile, overlap = tile_geometry(stride, tile, overlap)
    ys = axis_tiles(round_up(height, stride), tile, overlap)
    xs = axis_tiles(round_up(width, stride), tile, overlap)
    jobs = [(ty, tx) for ty in ys for tx in xs]
    per_call = max(1, min(batch_size, MAX_BATCH_PIXELS // (ys[0][1] * xs[0][1])))
    for i in range(0, len(jobs), per_call):
        chunk = jobs[i:i + per_call]
        batch = np.stack([_window(image, ty[0], ty[1], tx[0], tx[1]) for ty, tx in chunk]).astype(np.float32)
        logits = forward(model, batch)
        del batch
        for (ty, tx), out in zip(chunk, logits):
            yield ty, tx, out


def _iter_tiles(model, image: np.ndarray, stride: int, tile: int, overlap: int,
                batch_size: int) -> Iterator[tuple[int, int, int, int, np.ndarray]]:
    """(y0, y1, x0, x1, logits (y1-y0, x1-x0, K)) covering the image once, tile batch by tile batch."""
    height, width = image.shape[:2]
    for ty, tx, out in _iter_windows(model, image, stride, tile, overlap, batch_size):
        y0, y1 = ty[2], min(ty[3], height)
        x0, x1 = tx[2], min(tx[3], width)
        if y1 > y0 and x1 > x0:
            yield y0, y1, x0, x1, out[y0 - ty[0]:y1 - ty[0], x0 - tx[0]:x1 - tx[0]]


def _tta_probs(model, image: np.ndarray, tta: TTA, stride: int, tile: int, overlap: int,
               batch_size: int) -> np.ndarray:
    """float32 (H, W, K) mean softmax probabilities over the TTA passes of one image, each pass padded / tiled."""
    return tta_probs(image, tta, lambda src: _iter_windows(model, src, stride, tile, overlap, batch_size))


# --- images in, scores out ------------------------------------------------------------------------

def _check_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise SegcliError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    return image


def _stride_of(model, stride: int | None) -> int:
    if stride is None:
        from segcli.models import output_stride

        stride = output_stride(model)
    return max(1, int(stride))


def _label_dtype(num_classes: int):
    return np.uint8 if num_classes <= 256 else np.int32


def predict_logits(model, image: np.ndarray, *, stride: int | None = None, tile: int = 1024, overlap: int = 128,
                   batch_size: int = 4, softmax: bool = False, tta: str | TTA | None = None) -> np.ndarray:
    """float32 (H, W, K) logits (probabilities with `softmax=True`) for one (H, W, 3) RGB 0..255 image.

    The image is padded at the bottom/right (reflected) to a multiple of the output `stride`, run and cropped
    back to exactly H x W; a padded side larger than `tile` goes through overlapping tiles (up to `batch_size`
    tiles per model call, at most MAX_BATCH_PIXELS pixels). This holds the whole (H, W, K) result: for very
    large images use `predict_labels`.
    tta (`parse_tta`: "flip", "flip,0.75,1.25", ...): the mean softmax probabilities over its passes (needs
    softmax=True: probabilities, not logits, are averaged).
    """
    image = _check_image(image)
    stride = _stride_of(model, stride)
    tta = parse_tta(tta)
    if tta is not None:
        if not softmax:
            raise SegcliError("test-time augmentation averages probabilities: pass softmax=True with tta")
        return _tta_probs(model, image, tta, stride, tile, overlap, batch_size)
    out = None
    for y0, y1, x0, x1, block in _iter_tiles(model, image, stride, tile, overlap, batch_size):
        if out is None:
            out = np.empty(image.shape[:2] + (block.shape[-1],), np.float32)
        out[y0:y1, x0:x1] = _softmax(block) if softmax else block
    return out


def predict_labels(model, image: np.ndarray, *, stride: int | None = None, tile: int = 1024, overlap: int = 128,
                   batch_size: int = 4, probs_out=None, tta: str | TTA | None = None) -> np.ndarray:
    """(H, W) argmax labels (uint8 up to 256 classes) for one image of any size, tile by tile.

    probs_out: an (H, W, K) array (e.g. a float16 memmap) that receives the softmax probabilities.
    tta (`parse_tta`): labels and probabilities of the mean probabilities over its passes, each pass tiled like
    the plain one; this holds one float32 (H, W, K) accumulator.
    """
    image = _check_image(image)
    stride = _stride_of(model, stride)
    tta = parse_tta(tta)
    if tta is not None:
        probs = _tta_probs(model, image, tta, stride, tile, overlap, batch_size)
        labels = np.empty(image.shape[:2], _label_dtype(probs.shape[-1]))
        band = max(1, MAX_BATCH_PIXELS // max(1, image.shape[1]))
        for r0 in range(0, image.shape[0], band):
            labels[r0:r0 + band] = probs[r0:r0 + band].argmax(axis=-1)
            if probs_out is not None:
                probs_out[r0:r0 + band] = probs[r0:r0 + band]
        return labels
    labels = None
    for y0, y1, x0, x1, block in _iter_tiles(model, image, stride, tile, overlap, batch_size):
        if labels is None:
            labels = np.empty(image.shape[:2], _label_dtype(block.shape[-1]))
        labels[y0:y1, x0:x1] = block.argmax(axis=-1)
        if probs_out is not None:
            probs_out[y0:y1, x0:x1] = _softmax(block)
    return labels


def predict_batch(model, images: np.ndarray, *, stride: int | None = None,
                  tta: str | TTA | None = None) -> np.ndarray:
    """float32 (B, H, W, K) logits for a batch of equal-size (B, H, W, 3) images, padded and cropped back.

    With tta (`parse_tta`): the mean softmax probabilities over its passes instead (one model call per pass)."""
    images = np.asarray(images)
    stride = _stride_of(model, stride)
    tta = parse_tta(tta)
    if tta is not None:
        return tta_batch_probs(images, tta, lambda batch: predict_batch(model, batch, stride=stride))
    b, h, w = images.shape[:3]
    hp, wp = round_up(h, stride), round_up(w, stride)
    if (hp, wp) != (h, w):
        rows, cols = _reflect_index(np.arange(hp), h), _reflect_index(np.arange(wp), w)
        images = images[:, rows[:, None], cols[None, :]]
    return forward(model, images.astype(np.float32))[:, :h, :w]


def iter_predictions(model, items: Iterable[tuple[object, np.ndarray]], *, stride: int | None = None,
                     tile: int = 1024, overlap: int = 128, batch_size: int = 4,
                     probs_out: Callable[[object, tuple], np.ndarray] | None = None, tta: str | TTA | None = None):
    """Yield (key, image, labels, probs) for (key, image) items, batching consecutive equal-size small images
    (up to `batch_size`, at most MAX_BATCH_PIXELS pixels per model call).

    probs_out(key, (H, W, K)) returns the array to fill with probabilities (None: no probabilities).
    Items are read lazily, so at most `batch_size` images are held at once.
    tta (`parse_tta`): labels and probabilities from the mean probabilities over its passes.
    """
    stride = _stride_of(model, stride)
    tta = parse_tta(tta)
    num_classes = int(model.output_shape[-1])
    pending: list[tuple[object, np.ndarray]] = []

    def flush():
        if not pending:
            return
        logits = predict_batch(model, np.stack([im for _, im in pending]), stride=stride, tta=tta)
        labels = logits.argmax(axis=-1).astype(_label_dtype(num_classes))
        for j, (key, im) in enumerate(pending):
            probs = None
            if probs_out is not None:
                probs = probs_out(key, logits.shape[1:])
                probs[...] = _softmax(logits[j]) if tta is None else logits[j]  # with TTA: probabilities
            yield key, im, labels[j], probs
        pending.clear()

    grow = 1.0 if tta is None else max(tta.scales)  # the largest pass sets tiling and batch size

    for key, image in items:
        image = _check_image(image)
        h, w = scaled_size(*image.shape[:2], grow)
        if needs_tiles(h, w, stride=stride, tile=tile, overlap=overlap):
            yield from flush()
            probs = probs_out(key, image.shape[:2] + (num_classes,)) if probs_out is not None else None
            labels = predict_labels(model, image, stride=stride, tile=tile, overlap=overlap, batch_size=batch_size,
                                    probs_out=probs, tta=tta)
            yield key, image, labels, probs
            continue
        if pending and pending[0][1].shape != image.shape:
            yield from flush()
        pending.append((key, image))
        if len(pending) >= max(1, min(batch_size, MAX_BATCH_PIXELS // (h * w))):
            yield from flush()
    yield from flush()
