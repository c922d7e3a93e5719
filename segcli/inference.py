"""Prediction for images of any size: pad to the output stride, run, crop back; overlapping tiles for big ones.

Small images (padded size within one tile) of equal size are batched together. Bigger images go through
tiles of `tile` x `tile` pixels (a multiple of the output stride) that overlap by `overlap` pixels; each
output pixel is taken from the tile whose centre region holds it (the overlap gives every tile
`overlap / 2` pixels of context on each inner side), so nothing larger than one batch of tiles is ever
held as float scores: labels go into a uint8 (H, W) array, and probabilities, when asked for, into a
float16 (H, W, K) array the caller provides (a memory-mapped .npy file in `predict_files`).

Test-time augmentation (`tta=`, see `parse_tta`) runs one pass per scale and flip: the image resized (bilinear)
and/or mirrored goes through the same padded / tiled forward, and each window's softmax probabilities are
resampled to the image's own size (bilinear, as cv2.resize), mirrored back and added to one float32 (H, W, K)
accumulator; labels and probabilities come from the mean. Without `tta` nothing of this runs.
"""

from __future__ import annotations

import glob
import json
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from segcli.data import IMAGE_EXTS, read_image, write_image, write_mask_png
from segcli.errors import DataError, SegcliError
from segcli.files import (MARKER_NAME, check_writable_dir, ensure_writable_dir, new_temp_file,
                          remove_dead_writers_temp_files, segcli_folder_kind, write_json)
from segcli.progress import NullProgress, Progress
from segcli.sizes import round_up

# At most this many pixels per model call (whatever the batch size): one 1024x1024 tile. The activations
# of a batch, not the image, set the peak memory; on CPU one big tile per call was also the fastest.
MAX_BATCH_PIXELS = 1024 * 1024
_GLOB_CHARS = set("*?[")


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


def _forward(model, batch: np.ndarray) -> np.ndarray:
    """(B, h, w, 3) float32 0..255 -> (B, h, w, K) float32 logits; h and w are multiples of the stride."""
    out = np.asarray(_compiled(model)(batch.astype(np.float32, copy=False)), dtype=np.float32)
    if out.ndim != 4 or out.shape[1:3] != batch.shape[1:3]:
        raise SegcliError(f"the model returned shape {tuple(out.shape)} for input {tuple(batch.shape)}: "
                          "expected (B, H, W, classes) at the input size")
    return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


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


def _tile_geometry(stride: int, tile: int, overlap: int) -> tuple[int, int]:
    """(tile, overlap) rounded to the stride: tile down (at least one stride), overlap up (less than the tile)."""
    if tile < 1 or overlap < 0:
        raise SegcliError(f"tile must be >= 1 and overlap >= 0, got tile {tile}, overlap {overlap}")
    tile = max(stride, tile // stride * stride)
    overlap = min(round_up(overlap, stride), tile - stride)
    return tile, overlap


def _axis_tiles(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(start, size, core_start, core_end) along one padded axis; cores partition 0..length."""
    if length <= tile:
        return [(0, length, 0, length)]
    step = tile - overlap
    starts = list(range(0, length - tile, step)) + [length - tile]
    cuts = [0] + [(b + a + tile) // 2 for a, b in zip(starts, starts[1:])] + [length]
    return [(s, tile, cuts[i], cuts[i + 1]) for i, s in enumerate(starts)]


def needs_tiles(height: int, width: int, *, stride: int, tile: int = 1024, overlap: int = 128) -> bool:
    """True when an image of height x width goes through more than one tile."""
    tile, _ = _tile_geometry(stride, tile, overlap)
    return round_up(height, stride) > tile or round_up(width, stride) > tile


def _iter_windows(model, image: np.ndarray, stride: int, tile: int, overlap: int,
                  batch_size: int) -> Iterator[tuple[tuple, tuple, np.ndarray]]:
    """(ty, tx, logits of the whole window) for every tile, tile batch by tile batch; ty and tx are
    `_axis_tiles` entries (start, size, core_start, core_end) in the padded image."""
    height, width = image.shape[:2]
    tile, overlap = _tile_geometry(stride, tile, overlap)
    ys = _axis_tiles(round_up(height, stride), tile, overlap)
    xs = _axis_tiles(round_up(width, stride), tile, overlap)
    jobs = [(ty, tx) for ty in ys for tx in xs]
    per_call = max(1, min(batch_size, MAX_BATCH_PIXELS // (ys[0][1] * xs[0][1])))
    for i in range(0, len(jobs), per_call):
        chunk = jobs[i:i + per_call]
        batch = np.stack([_window(image, ty[0], ty[1], tx[0], tx[1]) for ty, tx in chunk]).astype(np.float32)
        logits = _forward(model, batch)
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


# --- test-time augmentation -----------------------------------------------------------------------

TTA_FLAG = "--tta"
TTA_SYNTAX = "flip, scales or both, e.g. flip, 0.75,1.25 or flip,0.75,1.25"
TTA_SCALE_RANGE = (0.25, 4.0)


@dataclass(frozen=True)
class TTA:
    """Test-time augmentation: one pass per scale (1.0 first, then the others), each also mirrored with `flip`.
    Passes average their softmax probabilities at the image's own size. `str(tta)` is its spec."""
    flip: bool
    scales: tuple[float, ...] = (1.0,)

    @property
    def passes(self) -> list[tuple[float, bool]]:
        """(scale, flipped) of every forward pass, in the order they run."""
        return [(s, f) for s in self.scales for f in ((False, True) if self.flip else (False,))]

    def __str__(self) -> str:
        return ",".join((["flip"] if self.flip else []) + [f"{s:g}" for s in self.scales if s != 1.0])


def parse_tta(spec: str | TTA | None) -> TTA | None:
    """`--tta` text -> TTA (None for no TTA: None, "" or "none"): comma-separated `flip` (identity + horizontal
    flip) and scales (each in 0.25..4; 1.0 always runs), e.g. "flip" or "flip,0.75,1.25". A TTA passes through.
    SegcliError (naming --tta) for anything else."""
    if spec is None or isinstance(spec, TTA):
        return spec
    text = str(spec).strip().lower()
    if text in ("", "none"):
        return None
    flip, scales = False, [1.0]
    lo, hi = TTA_SCALE_RANGE
    for word in (w.strip() for w in text.split(",")):
        if word == "flip":
            flip = True
            continue
        try:
            scale = float(word)
        except ValueError:
            raise SegcliError(f"{TTA_FLAG} {spec!r}: {word!r} is neither flip nor a scale; expected "
                              f"{TTA_SYNTAX}") from None
        if not lo <= scale <= hi:
            raise SegcliError(f"{TTA_FLAG} {spec!r}: scale {word} is outside {lo:g}..{hi:g}; expected {TTA_SYNTAX}")
        if scale not in scales:
            scales.append(scale)
    if not flip and len(scales) == 1:
        raise SegcliError(f"{TTA_FLAG} {spec!r}: adds no pass to the plain one; expected {TTA_SYNTAX}")
    return TTA(flip, tuple(scales))


def _scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def _pass_input(image: np.ndarray, scale: float, flip: bool) -> np.ndarray:
    """The input of one TTA pass: the image resized (bilinear, cv2), then mirrored left-right."""
    if scale != 1.0:
        import cv2

        h, w = _scaled_size(*image.shape[:2], scale)
        image = cv2.resize(np.ascontiguousarray(image), (w, h), interpolation=cv2.INTER_LINEAR)
    return image[:, ::-1] if flip else image


@dataclass(frozen=True)
class _Axis:
    """Bilinear resampling along one axis from `src` to `out` pixels, as cv2.INTER_LINEAR does it (half-pixel
    centres, edges clamped): output pixel i = (1 - w[i]) * source[lo[i]] + w[i] * source[hi[i]]."""
    lo: np.ndarray
    hi: np.ndarray
    w: np.ndarray
    identity: bool


def _axis(out: int, src: int) -> _Axis:
    if out == src:
        idx = np.arange(out)
        return _Axis(idx, idx, np.zeros(out, np.float32), True)
    f = ((np.arange(out) + 0.5) * (src / out) - 0.5).astype(np.float32)
    lo = np.floor(f).astype(np.int64)
    w = f - lo.astype(np.float32)
    w[lo < 0] = 0.0
    w[lo >= src - 1] = 0.0
    lo = np.clip(lo, 0, src - 1)
    return _Axis(lo, np.minimum(lo + 1, src - 1), w.astype(np.float32), False)


def _span(axis: _Axis, start: int, size: int, core0: int, core1: int):
    """The output pixels [a, b) whose source pixel `lo` lies in the core [core0, core1) of a window that holds
    source pixels [start, start + size), with lo/hi relative to the window (hi kept inside it)."""
    a, b = np.searchsorted(axis.lo, [core0, core1], side="left")
    lo = axis.lo[a:b] - start
    hi = np.minimum(axis.hi[a:b] - start, size - 1)
    return int(a), int(b), lo, hi, axis.w[a:b]


def _add_window(acc: np.ndarray, logits: np.ndarray, rows: _Axis, cols: _Axis, ty: tuple, tx: tuple,
                src_shape: tuple, flip: bool) -> None:
    """acc (H, W, K) += the softmax of one window of a pass's logits, resampled to the image's size (only the
    output pixels whose source lies in the window's core), mirrored back for a flipped pass."""
    sh, sw = src_shape
    ya, yb, rlo, rhi, wr = _span(rows, ty[0], ty[1], ty[2], min(ty[3], sh))
    xa, xb, clo, chi, wc = _span(cols, tx[0], tx[1], tx[2], min(tx[3], sw))
    if yb <= ya or xb <= xa:
        return
    r0, r1, c0, c1 = int(rlo[0]), int(rhi[-1]) + 1, int(clo[0]), int(chi[-1]) + 1
    probs = _softmax(logits[r0:r1, c0:c1])
    if not cols.identity:
        probs = probs[:, clo - c0] * (1.0 - wc)[None, :, None] + probs[:, chi - c0] * wc[None, :, None]
    if not rows.identity:
        probs = probs[rlo - r0] * (1.0 - wr)[:, None, None] + probs[rhi - r0] * wr[:, None, None]
    width = acc.shape[1]
    if flip:
        acc[ya:yb, width - xb:width - xa] += probs[:, ::-1]
    else:
        acc[ya:yb, xa:xb] += probs


def _tta_probs(model, image: np.ndarray, tta: TTA, stride: int, tile: int, overlap: int,
               batch_size: int) -> np.ndarray:
    """float32 (H, W, K) mean softmax probabilities over the TTA passes of one image; every pass runs through the
    padded / tiled forward, its windows resampled straight into the one accumulator."""
    height, width = image.shape[:2]
    acc = None
    for scale, flip in tta.passes:
        src = _pass_input(image, scale, flip)
        rows, cols = _axis(height, src.shape[0]), _axis(width, src.shape[1])
        for ty, tx, out in _iter_windows(model, src, stride, tile, overlap, batch_size):
            if acc is None:
                acc = np.zeros((height, width, out.shape[-1]), np.float32)
            _add_window(acc, out, rows, cols, ty, tx, src.shape[:2], flip)
        del src
    acc /= len(tta.passes)
    return acc


def _tta_batch_probs(model, images: np.ndarray, tta: TTA, stride: int) -> np.ndarray:
    """float32 (B, H, W, K) mean softmax probabilities over the TTA passes of equal-size images, one model call
    per pass (each at the pass's own padded size)."""
    b, height, width = images.shape[:3]
    acc = None
    for scale, flip in tta.passes:
        batch = np.stack([_pass_input(im, scale, flip) for im in images])
        sh, sw = batch.shape[1:3]
        logits = predict_batch(model, batch, stride=stride)
        del batch
        if acc is None:
            acc = np.zeros((b, height, width, logits.shape[-1]), np.float32)
        rows, cols = _axis(height, sh), _axis(width, sw)
        whole_y, whole_x = (0, sh, 0, sh), (0, sw, 0, sw)
        for j in range(b):
            _add_window(acc[j], logits[j], rows, cols, whole_y, whole_x, (sh, sw), flip)
        del logits
    acc /= len(tta.passes)
    return acc


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
        return _tta_batch_probs(model, images, tta, stride)
    b, h, w = images.shape[:3]
    hp, wp = round_up(h, stride), round_up(w, stride)
    if (hp, wp) != (h, w):
        rows, cols = _reflect_index(np.arange(hp), h), _reflect_index(np.arange(wp), w)
        images = images[:, rows[:, None], cols[None, :]]
    return _forward(model, images.astype(np.float32))[:, :h, :w]


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
        h, w = _scaled_size(*image.shape[:2], grow)
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


# --- files ----------------------------------------------------------------------------------------

def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))


def _glob_matches(pattern: str) -> list[Path]:
    """What a glob pattern matches, its leading folders that exist as named taken literally (a folder really
    called `shots[1]` is that folder, not the pattern for `shots1`); when that finds nothing, the pattern as is."""
    parts = Path(pattern).parts
    literal = 0
    while literal < len(parts) - 1 and os.path.isdir(os.path.join(*parts[:literal + 1])):
        literal += 1
    patterns = [pattern]
    if literal:
        patterns.insert(0, os.path.join(glob.escape(os.path.join(*parts[:literal])), *parts[literal:]))
    for candidate in patterns:
        matches = sorted(Path(p) for p in glob.glob(candidate, recursive=True))
        matches = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_EXTS]
        if matches:
            return matches
    return []


def resolve_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders as their images (sorted, not recursive), glob patterns as their matches.

    DataError for a path that does not exist, a pattern that matches nothing or a folder without images.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    found: list[Path] = []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            images = _images_in(path)
            if not images:
                raise DataError(f"no images in this folder ({', '.join(sorted(IMAGE_EXTS))})", path)
            found += images
        elif _GLOB_CHARS & set(text):
            matches = _glob_matches(os.path.expanduser(text))
            if not matches:
                raise DataError("no image files match this pattern", text)
            found += matches
        else:
            raise DataError("no such file or directory", path)
    unique, seen = [], set()
    for path in found:
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    if not unique:
        raise DataError("no input images given")
    return unique


class NpyRowWriter:
    """An (H, W, K) .npy file (created with np.lib.format.open_memmap) written through a memory map of one band
    of rows at a time: tiles arrive row by row, and unmapping each finished band keeps its pages out of this
    process's resident memory (a map of the whole file would hold every written page until the end).

    Supports `writer[rows, cols] = values` (slices) and `writer[...] = values`; call `close()` when done.
    """

    def __init__(self, path: str | Path, shape: tuple, dtype=np.float16):
        self.path, self.shape, self.dtype = Path(path), tuple(int(s) for s in shape), np.dtype(dtype)
        header = np.lib.format.open_memmap(self.path, mode="w+", dtype=self.dtype, shape=self.shape)
        self._offset = header.offset
        del header  # nothing was written: the file is sparse until bands land in it
        self._band, self._rows = None, (0, 0)

    def _map(self, r0: int, r1: int) -> None:
        self.close()
        row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        self._band = np.memmap(self.path, dtype=self.dtype, mode="r+", offset=self._offset + r0 * row_bytes,
                               shape=(r1 - r0,) + self.shape[1:])
        self._rows = (r0, r1)

    def __setitem__(self, key, value) -> None:
        if key is Ellipsis:
            key = (slice(None), slice(None))
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        r0, r1, step = rows.indices(self.shape[0])
        if step != 1:
            raise ValueError("NpyRowWriter takes contiguous row slices")
        if self._band is None or not (self._rows[0] <= r0 and r1 <= self._rows[1]):
            self._map(r0, r1)
        self._band[r0 - self._rows[0]:r1 - self._rows[0], cols] = value

    def close(self) -> None:
        if self._band is not None:
            self._band.flush()
            self._band = None  # the last reference: the band is unmapped here


def output_names(stem: str, *, overlay: bool = False, probabilities: bool = False) -> list[str]:
    """The file names `predict_files` writes for an input of this stem."""
    return ([f"{stem}.png"] + ([f"{stem}_overlay.png"] if overlay else [])
            + ([f"{stem}_probs.npy"] if probabilities else []))


PREDICTIONS_KIND = "predictions"  # the .segcli mark of a folder predict writes into, with the names it wrote


def written_by_predict(out_dir: Path) -> set[str]:
    """The output names an earlier `segcli predict` wrote in ``out_dir`` (from its .segcli mark): only those may
    be replaced; a file of the user's with a mask's name never is."""
    try:
        mark = json.loads((Path(out_dir) / MARKER_NAME).read_text())
        return set(mark["files"]) if mark.get("kind") == PREDICTIONS_KIND else set()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()


def _record_outputs(out_dir: Path, names: list[str]) -> None:
    """Before writing: add ``names`` to the mark (so a run killed half-way may be run again); a folder that is
    another segcli folder (a run folder, say) keeps its own mark."""
    if segcli_folder_kind(out_dir) not in (None, PREDICTIONS_KIND):
        return
    write_json(out_dir / MARKER_NAME, {"made_by": "segcli", "kind": PREDICTIONS_KIND,
                                       "files": sorted(written_by_predict(out_dir) | set(names))})


def check_predict_out(files: list[Path], out_dir: str | Path, *, overlay: bool = False,
                      probabilities: bool = False) -> Path:
    """Refuse, before any model runs, an `out_dir` that holds input images (an input folder, or the folder of
    an input file), an output that would replace an input (through a link, too), two inputs with one output
    name, and an `out_dir` that cannot take files (a file in the way, no permission). Creates nothing."""
    out_dir = Path(out_dir)
    real_out = os.path.realpath(out_dir)
    inputs = {os.path.realpath(p): Path(p) for p in files}
    for real, path in inputs.items():
        if real_out in (os.path.dirname(real), os.path.realpath(os.path.dirname(os.path.abspath(path)))):
            raise SegcliError(f"--out is the folder of the input image {path.name}: the masks would be written "
                              "among the inputs; choose another --out", out_dir)
    stats = {}
    for real, path in inputs.items():
        try:
            st = os.stat(real)
            stats[(st.st_dev, st.st_ino)] = path
        except OSError:
            pass
    ours = written_by_predict(out_dir)  # what an earlier `segcli predict` wrote there may be replaced
    by_name: dict[str, Path] = {}
    for path in files:
        for name in output_names(path.stem, overlay=overlay, probabilities=probabilities):
            if name in by_name:
                raise DataError(f"same output name as {by_name[name]} ({name}): predict them separately or "
                                "rename one", path)
            by_name[name] = path
            target = out_dir / name
            real = os.path.realpath(target)
            try:
                st = os.stat(target)
                same = stats.get((st.st_dev, st.st_ino))
            except OSError:
                same = None
            if real in inputs or same is not None:
                raise SegcliError(f"--out would overwrite the input {same or inputs[real]} with {name}; "
                                  "choose another --out", out_dir)
            if name not in ours and (target.exists() or target.is_symlink()):
                raise SegcliError(f"{name} exists in --out and segcli predict did not write it; choose another "
                                  "--out", out_dir)
    return check_writable_dir(out_dir)


@dataclass
class Prediction:
    image: Path
    mask: Path
    overlay: Path | None
    probabilities: Path | None
    height: int
    width: int


def predict_files(loaded, inputs, out_dir: str | Path = "predictions", *, overlay: bool = False, alpha: float = 0.5,
                  probabilities: bool = False, tile: int = 1024, overlap: int = 128, batch_size: int = 4,
                  tta: str | TTA | None = None, progress: Progress | None = None) -> list[Prediction]:
    """Predict a mask for every input image and write, per image, into `out_dir`:

    `<stem>.png` (palette PNG in the model's class colours, the input's H x W), with `overlay`
    `<stem>_overlay.png` (blend + legend), with `probabilities` `<stem>_probs.npy` (float16 (H, W, K)).
    Every file is written to a temporary name and renamed, so a failure leaves no half-written output.
    `out_dir` is checked first (`check_predict_out`): it may not hold the inputs or overwrite one.
    `progress` (segcli.progress) gets a task "predict", advanced after each image with the image's name.
    `tta` (`parse_tta`: "flip", "flip,0.75,1.25", ...): masks and probabilities from the mean softmax
    probabilities over its passes (one forward pass per flip and scale).
    """
    from segcli.overlay import overlay_image

    tta = parse_tta(tta)  # a bad spec fails before anything is read or written
    if not 0.0 <= alpha <= 1.0:
        raise SegcliError(f"alpha must be in 0..1, got {alpha}")
    if batch_size < 1:
        raise SegcliError(f"batch size must be >= 1, got {batch_size}")
    files = resolve_inputs(inputs)
    out_dir = check_predict_out(files, out_dir, overlay=overlay, probabilities=probabilities)
    ensure_writable_dir(out_dir)
    remove_dead_writers_temp_files(out_dir)  # what a killed predict left (only segcli's temporaries)
    _record_outputs(out_dir, [name for path in files
                              for name in output_names(path.stem, overlay=overlay, probabilities=probabilities)])
    classes, palette = loaded.classes, loaded.classes.palette()
    open_probs: dict[Path, NpyRowWriter] = {}

    def probs_target(path: Path, shape: tuple) -> NpyRowWriter:
        tmp = new_temp_file(out_dir / f"{path.stem}_probs.npy")  # the usual mode, not mkstemp's 0600
        open_probs[path] = writer = NpyRowWriter(tmp, shape, np.float16)
        return writer

    def read(path: Path):
        return path, read_image(path)

    records: list[Prediction] = []
    progress = progress or NullProgress()
    progress.start("predict", len(files))
    try:
        for path, image, labels, probs in iter_predictions(
                loaded.model, (read(p) for p in files), stride=loaded.output_stride, tile=tile, overlap=overlap,
                batch_size=batch_size, probs_out=probs_target if probabilities else None, tta=tta):
            stem = path.stem
            mask_path = out_dir / f"{stem}.png"
            write_mask_png(mask_path, labels, palette)
            overlay_path = probs_path = None
            if overlay:
                overlay_path = out_dir / f"{stem}_overlay.png"
                write_image(overlay_path, overlay_image(image, labels, classes, alpha))
            if probabilities:
                writer = open_probs.pop(path)
                writer.close()
                probs_path = out_dir / f"{stem}_probs.npy"
                os.replace(writer.path, probs_path)
            records.append(Prediction(path, mask_path, overlay_path, probs_path, *labels.shape[:2]))
            progress.advance("predict", len(records), info=path.name)
    finally:
        progress.end("predict")
        for writer in open_probs.values():
            writer.close()
            writer.path.unlink(missing_ok=True)
        open_probs.clear()
    return records


__all__ = ["predict_logits", "predict_labels", "predict_batch", "iter_predictions", "needs_tiles", "TTA", "parse_tta",
           "resolve_inputs", "predict_files", "check_predict_out", "output_names", "Prediction", "NpyRowWriter",
           "MAX_BATCH_PIXELS"]
