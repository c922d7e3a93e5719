"""Coloured masks over images: blend, a legend strip of the classes present, image | mask | overlay panels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from segcli.data import IMAGE_EXTS, ClassMap, load_classes, read_image, read_label_png, write_image
from segcli.errors import DataError, SegcliError
from segcli.files import check_writable_dir, guard_output, remove_stale_temporaries

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_CHUNK_ROWS = 512


def present_labels(labels: np.ndarray) -> list[int]:
    """Sorted label values that occur (counted in row chunks, so big masks need no big temporaries)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return []
    top = int(labels.max()) + 1
    seen = np.zeros(top, bool)
    for y in range(0, labels.shape[0], _CHUNK_ROWS):
        seen |= np.bincount(labels[y:y + _CHUNK_ROWS].ravel(), minlength=top).astype(bool)
    return np.flatnonzero(seen).tolist()


def colorize(labels: np.ndarray, classes: ClassMap) -> np.ndarray:
    """(H, W, 3) uint8 RGB: each label in its class colour, void in the ignore colour."""
    return np.take(classes.palette(), np.asarray(labels), axis=0, mode="clip")


def blend(image: np.ndarray, labels: np.ndarray, classes: ClassMap, alpha: float = 0.5,
          out: np.ndarray | None = None) -> np.ndarray:
    """image * (1 - alpha) + class colour * alpha where the label is a class; void (and unknown) pixels unchanged.

    Works in bands of rows (no full-size temporaries); `out` (H, W, 3) uint8 receives the result.
    """
    image = np.asarray(image, np.uint8)
    labels = np.asarray(labels)
    if image.shape[:2] != labels.shape:
        raise ValueError(f"labels {labels.shape} and image {image.shape[:2]} differ in size")
    out = np.empty_like(image) if out is None else out
    palette, k, alpha = classes.palette(), classes.num_classes, float(alpha)
    for y in range(0, labels.shape[0], _CHUNK_ROWS):
        lab, img = labels[y:y + _CHUNK_ROWS], image[y:y + _CHUNK_ROWS]
        mixed = cv2.addWeighted(img, 1.0 - alpha, np.take(palette, lab, axis=0, mode="clip"), alpha, 0.0)
        keep = lab >= k
        mixed[keep] = img[keep]
        out[y:y + _CHUNK_ROWS] = mixed
    return out


def _font_scale(width: int) -> float:
    return float(np.clip(width / 960.0, 0.4, 3.0))


def legend(classes: ClassMap, present_ids, width: int | None = None, scale: float | None = None) -> np.ndarray:
    """(h, width, 3) uint8 RGB strip on white: a colour swatch and the name of each class in `present_ids`
    (the ignore index shows as the void name), wrapped into rows to fit `width` (None: one row)."""
    scale = _font_scale(width or 960) if scale is None else float(scale)
    thick = max(1, int(round(scale * 1.5)))
    (_, text_h), base = cv2.getTextSize("Ag", _FONT, scale, thick)
    swatch, pad = text_h + base, max(4, int(round(8 * scale)))
    items = []
    for i in sorted({int(i) for i in present_ids}):
        if 0 <= i < classes.num_classes:
            items.append((classes.names[i], classes.colors[i]))
        elif i == classes.ignore_index:
            items.append((f"{classes.ignore_name} (not scored)", classes.ignore_color))
    if not items:
        items = [("(no classes)", None)]
    widths = [swatch * (c is not None) + pad // 2 + cv2.getTextSize(n, _FONT, scale, thick)[0][0] for n, c in items]
    limit = width if width else sum(widths) + pad * (len(items) + 1)
    rows, row, used = [], [], pad
    for item, w in zip(items, widths):
        if row and used + w + pad > limit:
            rows.append(row)
            row, used = [], pad
        row.append((item, w))
        used += w + pad
    rows.append(row)
    line_h = swatch + pad
    strip = np.full((pad + line_h * len(rows), limit, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        x, y = pad, pad + r * line_h
        for (name, color), w in row:
            text_x = x
            if color is not None:
                cv2.rectangle(strip, (x, y), (x + swatch - 1, y + swatch - 1), tuple(int(c) for c in color), -1)
                cv2.rectangle(strip, (x, y), (x + swatch - 1, y + swatch - 1), (64, 64, 64), 1)
                text_x = x + swatch + pad // 2
            cv2.putText(strip, name, (text_x, y + text_h), _FONT, scale, (0, 0, 0), thick, cv2.LINE_AA)
            x += w + pad
    return strip


def overlay_image(image: np.ndarray, labels: np.ndarray, classes: ClassMap, alpha: float = 0.5,
                  panel: bool = False) -> np.ndarray:
    """The blended overlay with a legend strip below; `panel`: image | coloured mask | overlay, legend below
    (the panel is exactly 3 image widths wide). Built in place: one output array, no full-size temporaries."""
    image = np.asarray(image, np.uint8)
    labels = np.asarray(labels)
    if image.shape[:2] != labels.shape:
        raise ValueError(f"labels {labels.shape} and image {image.shape[:2]} differ in size")
    h, w = labels.shape
    width = 3 * w if panel else w
    strip = legend(classes, present_labels(labels), width=width, scale=_font_scale(w))
    canvas = np.empty((h + strip.shape[0], width, 3), np.uint8)
    canvas[h:] = strip
    if panel:
        canvas[:h, :w] = image
        for y in range(0, h, _CHUNK_ROWS):
            end = min(y + _CHUNK_ROWS, h)
            canvas[y:end, w:2 * w] = colorize(labels[y:end], classes)
    blend(image, labels, classes, alpha, out=canvas[:h, width - w:])
    return canvas


# --- `segcli overlay IMAGE MASK` ------------------------------------------------------------------

def _classes_near(mask_path: Path) -> ClassMap | None:
    """classes.json beside the mask, or in the dataset root above it (up to three folders up)."""
    for folder in list(mask_path.resolve().parents)[:3]:
        if (folder / "classes.json").is_file():
            return load_classes(folder / "classes.json")
    return None


def _classes_from_colors(raw: np.ndarray, mask_path: Path) -> ClassMap:
    colors = np.unique(raw.reshape(-1, 3), axis=0)
    if len(colors) > 255:
        raise DataError(f"colour mask with {len(colors)} colours and no classes file: pass --classes FILE", mask_path)
    return ClassMap(tuple(f"color_{r}_{g}_{b}" for r, g, b in colors.tolist()), tuple(map(tuple, colors.tolist())))


def mask_labels(mask_path: str | Path, classes: ClassMap | None = None) -> tuple[np.ndarray, ClassMap]:
    """(labels, classes) of a label PNG (palette, index, binary or colour), with classes from `classes`,
    else classes.json near the mask, else inferred from the mask itself."""
    from segcli.data.masks import decode_mask, detect_encoding, infer_classes

    mask_path = Path(mask_path)
    raw = read_label_png(mask_path)
    if classes is None:
        classes = _classes_near(mask_path)
    encoding = detect_encoding([mask_path], classes)
    if classes is None:
        if encoding == "rgb":
            classes = _classes_from_colors(raw, mask_path)
        else:
            classes, _ = infer_classes([mask_path], encoding)
    return decode_mask(raw, encoding, classes, path=mask_path), classes


def overlay_output(image_path: str | Path, mask_path: str | Path, out: str | Path | None = None, *,
                   panel: bool = False) -> Path:
    """Where `overlay_files` writes, checked before any work: `out` (a file name with an image extension, or an
    existing folder to write ``<image stem>_overlay.png`` / ``_panel.png`` into; default: the current folder).
    A one-line error for an `out` that is the image or the mask, has no image extension, or whose folder
    cannot take files."""
    image_path, mask_path = Path(image_path), Path(mask_path)
    name = f"{image_path.stem}_{'panel' if panel else 'overlay'}.png"
    out = Path(out) if out is not None else Path(name)
    if out.is_dir():
        out = out / name
    if out.suffix.lower() not in IMAGE_EXTS:
        raise SegcliError(f"--out needs an image extension ({', '.join(IMAGE_EXTS)}) or an existing folder", out)
    for source in (image_path, mask_path):
        if source.exists() and (out.exists() and out.samefile(source)):
            raise SegcliError(f"--out would overwrite the input {source}; choose another --out", out)
    if out.exists() and not out.is_file():
        raise SegcliError("exists and is not a file", out)
    guard_output(out, [image_path, mask_path])
    check_writable_dir(out.parent)
    return out


def overlay_files(image_path: str | Path, mask_path: str | Path, out: str | Path | None = None, *,
                  alpha: float = 0.5, panel: bool = False, classes_file: str | Path | None = None) -> Path:
    """Write the overlay (or panel) of MASK over IMAGE to `out` (see `overlay_output`; default:
    ./<image stem>_overlay.png or _panel.png; an existing folder: that name inside it)."""
    if not 0.0 <= alpha <= 1.0:
        raise SegcliError(f"alpha must be in 0..1, got {alpha}")
    image_path, mask_path = Path(image_path), Path(mask_path)
    out = overlay_output(image_path, mask_path, out, panel=panel)
    image = read_image(image_path)
    classes = load_classes(classes_file) if classes_file is not None else None
    labels, classes = mask_labels(mask_path, classes)
    if labels.shape != image.shape[:2]:
        raise SegcliError(f"mask is {labels.shape[0]}x{labels.shape[1]} but the image {image_path.name} is "
                          f"{image.shape[0]}x{image.shape[1]} (HxW)", mask_path)
    remove_stale_temporaries(out)  # what a killed overlay of this output left beside it
    write_image(out, overlay_image(image, labels, classes, alpha, panel=panel))
    return out


__all__ = ["blend", "colorize", "legend", "overlay_image", "present_labels", "mask_labels", "overlay_files",
           "overlay_output"]
