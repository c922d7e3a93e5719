"""Test-time augmentation on arrays: the `--tta` spec, and the maths of averaging its passes (no model, no files).

`TTA` / `parse_tta`: one forward pass per scale and flip. A pass's input is the image resized (bilinear, cv2)
and/or mirrored; `tta_probs` and `tta_batch_probs` run each pass through a forward function the caller gives
(segcli.inference: padded or tiled), resample each window's softmax probabilities to the image's own size
(bilinear, as cv2.resize), mirror them back and add them to one float32 (H, W, K) accumulator, and return the
mean. `softmax` here is the one segcli.inference uses too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from segcli.errors import SegcliError

TTA_FLAG = "--tta"
TTA_SYNTAX = "flip, scales or both, e.g. flip, 0.75,1.25 or flip,0.75,1.25"
TTA_SCALE_RANGE = (0.25, 4.0)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (float32 logits in, probabilities out; computed in a new array)."""
    z = logits - logits.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


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


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The size of an image of height x width resized by `scale` (at least 1 x 1)."""
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def _pass_input(image: np.ndarray, scale: float, flip: bool) -> np.ndarray:
    """The input of one TTA pass: the image resized (bilinear, cv2), then mirrored left-right."""
    if scale != 1.0:
        import cv2

        h, w = scaled_size(*image.shape[:2], scale)
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
    probs = softmax(logits[r0:r1, c0:c1])
    if not cols.identity:
        probs = probs[:, clo - c0] * (1.0 - wc)[None, :, None] + probs[:, chi - c0] * wc[None, :, None]
    if not rows.identity:
        probs = probs[rlo - r0] * (1.0 - wr)[:, None, None] + probs[rhi - r0] * wr[:, None, None]
    width = acc.shape[1]
    if flip:
        acc[ya:yb, width - xb:width - xa] += probs[:, ::-1]
    else:
        acc[ya:yb, xa:xb] += probs



def tta_probs(image: np.ndarray, tta: TTA,
              windows: Callable[[np.ndarray], Iterable[tuple[tuple, tuple, np.ndarray]]]) -> np.ndarray:
    """float32 (H, W, K) mean softmax probabilities over the TTA passes of one image.

    `windows(pass_input)` runs one pass's input through the padded / tiled forward: (ty, tx, logits of the
    whole window) per tile, ty and tx as (start, size, core_start, core_end) in the padded input. Each window is
    resampled straight into the one accumulator."""
    height, width = image.shape[:2]
    acc = None
    for scale, flip in tta.passes:
        src = _pass_input(image, scale, flip)
        rows, cols = _axis(height, src.shape[0]), _axis(width, src.shape[1])
        for ty, tx, out in windows(src):
            if acc is None:
                acc = np.zeros((height, width, out.shape[-1]), np.float32)
            _add_window(acc, out, rows, cols, ty, tx, src.shape[:2], flip)
        del src
    acc /= len(tta.passes)
    return acc


def tta_batch_probs(images: np.ndarray, tta: TTA, logits_of: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """float32 (B, H, W, K) mean softmax probabilities over the TTA passes of equal-size images; `logits_of(batch)`
    gives the (B, h, w, K) logits of one pass's batch at its own size (one model call per pass)."""
    b, height, width = images.shape[:3]
    acc = None
    for scale, flip in tta.passes:
        batch = np.stack([_pass_input(im, scale, flip) for im in images])
        sh, sw = batch.shape[1:3]
        logits = logits_of(batch)
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


__all__ = ["TTA", "TTA_FLAG", "TTA_SCALE_RANGE", "TTA_SYNTAX", "parse_tta", "scaled_size", "softmax", "tta_probs",
           "tta_batch_probs"]
