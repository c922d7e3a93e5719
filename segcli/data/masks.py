"""Mask encodings, detected from the files and decoded to class labels.

- "index":   single-channel 8- or 16-bit class indices
- "palette": palette ('P' mode) PNGs: the palette index is the class
- "rgb":     colour masks, mapped through the classes file colours
- "binary":  single-channel values exactly {0, 255}, read as 0/1
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from segcli.data.classes import ClassMap, default_classes
from segcli.data.imageio import is_jpeg, lookup_colors, png_color_type, read_label_png, read_png_palette
from segcli.errors import DataError

ENCODINGS = ("index", "palette", "rgb", "binary")
BINARY_NOTICE = "masks are 0/255 binary: read as 0/1 (background, foreground)"


def io_threads() -> int:
    return min(16, (os.cpu_count() or 2) + 2)


def _is_grey(raw: np.ndarray) -> bool:
    return raw.ndim == 2 or bool((raw[..., 0] == raw[..., 1]).all() and (raw[..., 1] == raw[..., 2]).all())


def _kind(path: Path, classes: ClassMap | None) -> tuple[str, np.ndarray | None]:
    """("palette" | "rgb" | "grey", pixel count per grey value, None unless grey) for one mask file."""
    if png_color_type(path) == 3:
        return "palette", None
    raw = read_label_png(path)
    if raw.ndim == 3:
        colors = np.unique(raw.reshape(-1, 3), axis=0)
        known = classes.colors + (classes.ignore_color,) if classes is not None else None
        listed = known is not None and bool((lookup_colors(colors[None], known) >= 0).all())
        if listed or not _is_grey(raw):
            return "rgb", None
        raw = raw[..., 0]
    return "grey", np.bincount(raw.ravel())


def noisy_binary(counts: np.ndarray, classes: ClassMap | None = None, lossy: bool = False) -> str | None:
    """A notice when grey masks look like 0/255 binary masks with in-between values (lossy JPEG saving,
    resizing with interpolation), judged from the pixel count per value; None when they do not.

    Mostly 0 and 255 (half the pixels or more; edges hold the rest), plus values the classes cannot explain: values outside the
    classes file, or without one, values from 128 to 254 (index masks with void 255 rarely have 128 classes),
    or any value when the masks are `lossy` (JPEG files).
    """
    if len(counts) <= 255 or not counts[0] or not counts[255]:
        return None
    others = np.flatnonzero(counts)
    others = others[(others != 0) & (others != 255)]
    if classes is not None:
        others = others[(others >= classes.num_classes) & (others != classes.ignore_index)]
    elif not lossy and not ((others >= 128) & (others < 255)).any():
        return None
    share = (counts[0] + counts[255]) / counts.sum()
    if not others.size or share < 0.5:
        return None
    return (f"masks look like 0/255 binary masks with in-between values, not class indices ({100 * share:.1f}% "
            f"of pixels are 0 or 255; other values: {_listing(others, 4)}): saving masks as JPEG or resizing them "
            "with interpolation does this; save masks as PNG, resized with nearest neighbour")


def detect_encoding(mask_paths, classes: ClassMap | None = None, sample: int = 8,
                    notices: list[str] | None = None) -> str:
    """The encoding of a set of masks, judged from up to `sample` evenly spread files.

    0/255 masks with in-between values (see noisy_binary) are taken as binary, when the classes allow,
    so each file with other values is named; the notice saying so is appended to `notices`.
    """
    paths = [Path(p) for p in mask_paths]
    if not paths:
        raise DataError("no masks to detect the encoding from")
    picks = [paths[i] for i in sorted({round(i * (len(paths) - 1) / max(sample - 1, 1)) for i in range(sample)})]
    kinds, counts = {}, np.zeros(0, np.int64)  # kind -> the sampled files of that kind
    for path in picks:
        try:
            kind, found = _kind(path, classes)
        except DataError:
            continue  # unreadable: `data check` reports it
        kinds.setdefault(kind, []).append(path)
        if found is not None:
            counts = np.pad(counts, (0, max(len(found) - len(counts), 0)))
            counts[:len(found)] += found
    if not kinds:
        raise DataError("none of the sampled masks could be read", picks[0].parent)
    if len(kinds) > 1:  # named: a file of the rarest kind (in a tie, not the first file's), and one of the commonest
        first = next(iter(kinds))
        ranked = sorted(kinds, key=lambda k: (len(kinds[k]), k == first))
        odd, usual = ranked[0], ranked[-1]
        example = kinds[usual][0]
        raise DataError(f"{odd} mask, but {example.parent.name}/{example.name} is {usual}: masks mix encodings "
                        f"({', '.join(sorted(kinds))}); use one kind of mask file", kinds[odd][0])
    kind, = kinds
    if kind != "grey":
        return kind
    binary_ok = classes is None or (classes.num_classes == 2 and classes.ignore_index != 255)
    noisy = noisy_binary(counts, classes, lossy=any(is_jpeg(p) for p in picks if p.is_file()))
    if noisy and notices is not None:
        notices.append(noisy)
    values = set(np.flatnonzero(counts).tolist())
    return "binary" if binary_ok and (values == {0, 255} or noisy) else "index"


def label_dtype(classes: ClassMap):
    """The dtype of decoded labels: uint8 while every label (the classes and the ignore index) fits, else int32."""
    return np.uint8 if max(classes.num_classes - 1, classes.ignore_index) <= 255 else np.int32


def decode_mask(raw: np.ndarray, encoding: str, classes: ClassMap, path: str | Path | None = None) -> np.ndarray:
    """(H, W) labels (uint8, or int32 when labels go past 255): 0..K-1, void stays classes.ignore_index."""
    k, ignore = classes.num_classes, classes.ignore_index
    if encoding == "rgb":
        if raw.ndim != 3:
            raise DataError("expected a colour (RGB) mask, found a single-channel one", path)
        idx = lookup_colors(raw, classes.colors + (classes.ignore_color,))
        if (idx < 0).any():
            bad = np.unique(raw[idx < 0].reshape(-1, 3), axis=0)
            shown = ", ".join(f"({r},{g},{b})" for r, g, b in bad[:5].tolist())
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise DataError(f"RGB colours not in the classes file: {shown}{more}", path)
        return np.where(idx == k, ignore, idx).astype(label_dtype(classes))
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown mask encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")
    if raw.ndim == 3:
        if not _is_grey(raw):
            raise DataError(f"expected a single-channel {encoding} mask, found a colour one", path)
        raw = raw[..., 0]
    present = np.flatnonzero(np.bincount(raw.ravel()))
    if encoding == "binary":
        bad = present[(present != 0) & (present != 255)]
        if bad.size:
            raise DataError(f"binary mask has values other than 0/255: {_listing(bad)} (saved as JPEG, or "
                            "resized with interpolation?)", path)
        return (raw // 255).astype(np.uint8)
    bad = present[(present >= k) & (present != ignore)]
    if bad.size:
        raise DataError(f"label values {_listing(bad)} outside the classes (0..{k - 1}, void {ignore})", path)
    return raw.astype(label_dtype(classes), copy=False)


def _listing(values: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(str(v) for v in values[:limit].tolist())
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def read_mask(path: str | Path, encoding: str, classes: ClassMap) -> np.ndarray:
    return decode_mask(read_label_png(path), encoding, classes, path=path)


def infer_classes(mask_paths, encoding: str) -> tuple[ClassMap, str]:
    """Classes guessed from the masks themselves (every mask is scanned), and a notice saying so."""
    paths = [Path(p) for p in mask_paths]
    if encoding == "binary":
        return default_classes(2, ["background", "foreground"]), "no classes file: 2 classes (background, foreground)"
    if encoding == "rgb":
        raise DataError("colour (RGB) masks need a classes file listing the colours: pass --classes FILE "
                        "or put classes.json in the dataset folder", paths[0].parent if paths else None)

    def values(path: Path) -> set[int]:
        try:
            raw = read_label_png(path)
        except DataError:
            return set()
        return set(np.flatnonzero(np.bincount((raw[..., 0] if raw.ndim == 3 else raw).ravel())).tolist())

    with ThreadPoolExecutor(io_threads()) as pool:
        found = set().union(*pool.map(values, paths))
    if not found:
        raise DataError("none of the masks could be read", paths[0].parent if paths else None)
    void = 255 in found and max(found - {255}, default=0) < 255
    k = max((found - {255}) if void else found, default=0) + 1
    classes = default_classes(k)
    if encoding == "palette":  # the masks carry their own colours
        plte = read_png_palette(paths[0])
        if plte is not None and len(plte) >= k:
            colors = tuple(tuple(c) for c in plte[:k].tolist())
            ignore_color = tuple(plte[255].tolist()) if len(plte) > 255 else (0, 0, 0)
            classes = ClassMap(classes.names, colors, classes.ignore_index, classes.ignore_name, ignore_color)
    notice = (f"no classes file: inferred {k} classes from the mask values (0..{k - 1}"
              f"{', 255 = void' if void else ''}); pass --classes FILE to name them")
    return classes, notice
