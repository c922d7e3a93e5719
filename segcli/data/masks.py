"""Mask encodings, detected from the files and decoded to class labels.

- "index":   single-channel 8- or 16-bit class indices
- "palette": palette ('P' mode) PNGs: the palette index is the class
- "palette-by-colour": palette PNGs whose entries map to classes by their colour in the classes file
  (`--palette-by-colour`: open_dataset turns "palette" into it; detect_encoding never returns it)
- "rgb":     colour masks, mapped through the classes file colours
- "binary":  single-channel values exactly {0, 255}, read as 0/1
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from segcli.data.classes import ClassMap, default_classes
from segcli.data.headers import image_size
from segcli.data.imageio import (is_jpeg, lookup_colors, png_color_type, read_image, read_label_png,
                                 read_png_palette)
from segcli.errors import DataError

ENCODINGS = ("index", "palette", "rgb", "binary", "palette-by-colour")
PALETTE_BY_COLOUR = "palette-by-colour"
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


def _class_colours(classes: ClassMap) -> tuple:
    """The colours a colour lookup maps to 0..K-1, then K for void (classes.ignore_color)."""
    return classes.colors + (classes.ignore_color,)


def _palette_entries(path: str | Path | None) -> np.ndarray:
    plte = read_png_palette(path) if path is not None and png_color_type(path) == 3 else None
    if plte is None:
        raise DataError("expected a palette PNG (--palette-by-colour maps its palette's colours to classes)", path)
    return plte


def palette_by_colour(raw: np.ndarray, palette: np.ndarray, classes: ClassMap, path=None) -> np.ndarray:
    """(H, W) palette indices `raw` as labels: each entry used maps to the class of its colour in `classes`
    (void's colour to the ignore index); a used entry whose colour no class has is a DataError naming it."""
    used = np.flatnonzero(np.bincount(raw.ravel(), minlength=256))
    table = np.full(256, -1, np.int64)
    known = used[used < len(palette)]
    table[known] = lookup_colors(palette[known][None], _class_colours(classes))[0]
    bad = used[table[used] < 0]
    if bad.size:
        shown = ", ".join(f"{i} ({','.join(str(c) for c in palette[i])})" if i < len(palette) else f"{i} (none)"
                          for i in bad[:5].tolist())
        raise DataError(f"palette entries whose colour is in no class of the classes file: {shown}"
                        f"{' and more' if bad.size > 5 else ''} (--palette-by-colour)", path)
    table = np.where(table == classes.num_classes, classes.ignore_index, table)
    return table[raw].astype(label_dtype(classes))


def palette_disagreement(raw: np.ndarray, palette: np.ndarray | None, classes: ClassMap) -> list[tuple[int, int]]:
    """(entry, class) for each palette entry used in `raw` whose colour is another class's colour in `classes`
    (void's counts as class classes.ignore_index): read by index, that entry would be the wrong class. Empty
    when the palette agrees (or its colours are in no class at all: a classes file without colours)."""
    if palette is None:
        return []
    colours = _class_colours(classes)
    used = np.flatnonzero(np.bincount(raw.ravel(), minlength=256))
    used = used[used < len(palette)]
    by_colour = lookup_colors(palette[used][None], colours)[0]
    found = []
    for entry, cls in zip(used.tolist(), by_colour.tolist()):
        if cls < 0:
            continue
        label = classes.ignore_index if cls == classes.num_classes else cls
        by_index_colour = colours[entry] if entry < classes.num_classes else (
            classes.ignore_color if entry == classes.ignore_index else None)
        if label != entry and tuple(palette[entry].tolist()) != by_index_colour:
            found.append((entry, label))
    return found


def palette_notice(path: Path, disagreement: list[tuple[int, int]], classes: ClassMap, by_colour: bool) -> str:
    """One line naming the file whose palette disagrees with the classes file, and how segcli reads it."""
    def name(label: int) -> str:
        return classes.ignore_name if label == classes.ignore_index else classes.names[label]

    pairs = ", ".join(f"entry {e} has {name(c)}'s colour" for e, c in disagreement[:4])
    more = f" and {len(disagreement) - 4} more" if len(disagreement) > 4 else ""
    if by_colour:
        how = "segcli maps palette entries to classes by colour (--palette-by-colour)"
    else:
        how = ("segcli reads palette entries by index (entry i is class i); pass --palette-by-colour to map "
               "them by colour")
    return f"{path.parent.name}/{path.name}: its palette disagrees with the classes file's colours ({pairs}{more}): {how}"


def decode_mask(raw: np.ndarray, encoding: str, classes: ClassMap, path: str | Path | None = None) -> np.ndarray:
    """(H, W) labels (uint8, or int32 when labels go past 255): 0..K-1, void stays classes.ignore_index.
    "palette-by-colour" reads the palette of the file at `path`."""
    k, ignore = classes.num_classes, classes.ignore_index
    if encoding == PALETTE_BY_COLOUR:
        return palette_by_colour(raw, _palette_entries(path), classes, path)
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


MAPPED_ENCODINGS = ("index", "palette")  # the encodings whose stored values a label mapping can map


def check_mapping(mapping: dict[int, int], classes: ClassMap, encoding: str, source=None) -> None:
    """A label mapping fits the classes and the masks: single-channel masks (index or palette), stored values
    up to 65535 (negative ones, such as Cityscapes' -1, never occur in a file and are left out), training IDs
    that are classes (0..K-1) or the ignore index; DataError naming `source` otherwise."""
    if encoding not in MAPPED_ENCODINGS:
        raise DataError(f"label_mapping maps stored values, but the masks are {encoding}: a mapping needs "
                        "single-channel (index or palette) masks", source)
    k, ignore = classes.num_classes, classes.ignore_index
    for stored, label in mapping.items():
        if stored > 65535:
            raise DataError(f"label_mapping: stored value {stored} cannot be in a mask (0..65535)", source)
        if stored >= 0 and not (0 <= label < k or label == ignore):
            raise DataError(f"label_mapping: {stored} -> {label}, but the classes are 0..{k - 1} (ignore {ignore})",
                            source)


def apply_mapping(raw: np.ndarray, mapping: dict[int, int], classes: ClassMap, path=None) -> np.ndarray:
    """Stored values -> training IDs: each value through `mapping`; a value not in it, or mapped to no class,
    becomes classes.ignore_index."""
    if raw.ndim == 3:
        if not _is_grey(raw):
            raise DataError("expected a single-channel mask (label_mapping maps stored values), found a colour one",
                            path)
        raw = raw[..., 0]
    k, ignore = classes.num_classes, classes.ignore_index
    table = np.full(max(int(raw.max(initial=0)) + 1, max(mapping, default=0) + 1), ignore, np.int64)
    for stored, label in mapping.items():
        if stored >= 0:
            table[stored] = label if 0 <= label < k else ignore
    return table[raw].astype(label_dtype(classes))


def load_labels(pair, encoding: str, classes: ClassMap, mapping: dict[int, int] | None = None,
                image_hw: tuple[int, int] | None = None) -> np.ndarray:
    """A pair's labels (H, W): the one way every reader of labels (the pipelines, data check, evaluate) gets them.

    pair.reader(image_hw) when the pair has one (image_hw: the image's (H, W); None reads it from the image's
    header), checked to hold classes and the ignore index only; else the mask file decoded as `encoding`, with
    `mapping` (stored value -> training ID) applied before the range check."""
    if pair.reader is not None:
        if image_hw is None:
            image_hw = image_size(pair.image) or read_image(pair.image).shape[:2]
        labels = np.asarray(pair.reader(tuple(int(v) for v in image_hw)))
        flat = labels.ravel()
        present = np.unique(flat[flat < 0]) if flat.size and flat.min() < 0 else np.flatnonzero(np.bincount(flat))
        bad = present[((present < 0) | (present >= classes.num_classes)) & (present != classes.ignore_index)]
        if bad.size:
            raise DataError(f"labels {_listing(bad)} outside the classes (0..{classes.num_classes - 1}, "
                            f"void {classes.ignore_index})", pair.mask)
        return labels.astype(label_dtype(classes))
    return decode_labels(read_label_png(pair.mask), encoding, classes, mapping, pair.mask)


def decode_labels(raw: np.ndarray, encoding: str, classes: ClassMap, mapping: dict[int, int] | None = None,
                  path=None) -> np.ndarray:
    """decode_mask, with `mapping` (stored value -> training ID) applied first when there is one."""
    if mapping:
        return decode_mask(apply_mapping(raw, mapping, classes, path), "index", classes, path=path)
    return decode_mask(raw, encoding, classes, path=path)


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
