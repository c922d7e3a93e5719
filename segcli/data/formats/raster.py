"""Rasterising annotations into label masks: the reader that the annotation formats (COCO JSON, YOLO polygons,
LabelMe) give their pairs as `Pair.reader`, and the checks they make on polygons while reading.

How a mask is drawn (the same for every annotation format):
- The canvas is int32 (H, W), filled with the format's background value (class 0 in all three: unannotated
  pixels are background, see each format's docstring).
- Polygons are filled with `cv2.fillPoly`, their coordinates rounded to the nearest pixel (as LabelMe's own
  converter does; a pixel on the outline is inside, so an edge may land one pixel off where another tool draws it);
  a polygon with a vertex far outside the image is first cut to it (cv2 takes int32 pixels).
  Coordinates are pixels of the image the annotation names, or, for YOLO, 0..1 of its width and height.
- Overlaps: shapes are drawn in the order the `Drawing` lists them, each over the ones before; the formats list
  them in file order, except that a COCO `iscrowd` region comes first, so any instance on top of it wins.
- COCO RLE masks (``counts`` a list or a compressed string) are decoded by pycocotools, never here.

`Drawing` is a small frozen dataclass holding its shapes (no file is read again when it is called), so the NumPy
loader can pickle it into worker processes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from segcli.data.formats.base import Problem
from segcli.errors import DataError

FORMATS_EXTRA = "pip install 'segcli[formats]'"
# how far (in pixels, or in 0..1 units for normalised coordinates) a vertex may lie outside the image before the
# polygon counts as reaching outside: exporters round vertices on the border to the pixel edge (x = W)
PIXEL_SLACK = 1.0
NORMALISED_SLACK = 1e-3
FAR = 4  # a polygon with a coordinate beyond FAR x (H + W) pixels is cut to the image before it is filled


@dataclass(frozen=True)
class Shape:
    """One annotation to draw: `value` (a class index, or the ignore index) over a polygon (x1, y1, x2, y2, ...),
    or over a COCO RLE mask (a dict with "size" [H, W] and "counts", a list or a compressed string)."""

    value: int
    polygon: tuple[float, ...] = ()
    rle: dict | None = None


@dataclass(frozen=True)
class Drawing:
    """`Pair.reader`: called with the image's (H, W), returns int32 labels (H, W): `background` where no shape
    lies, each shape's value where it lies, later shapes over earlier ones.

    `size`: the (H, W) the annotation file says the image has (COCO, LabelMe); another size is a DataError naming
    `source` and the image, since the coordinates would land in the wrong place. `normalised`: polygon coordinates
    are 0..1 of the width and height (YOLO), scaled to the image's size."""

    source: Path
    image: str
    shapes: tuple[Shape, ...]
    background: int = 0
    size: tuple[int, int] | None = None
    normalised: bool = False

    def __call__(self, image_hw: tuple[int, int]) -> np.ndarray:
        h, w = (int(v) for v in image_hw[:2])
        if self.size is not None and tuple(self.size) != (h, w):
            raise DataError(f"annotations of {self.image} are for a {self.size[0]}x{self.size[1]} image, but the "
                            f"image is {h}x{w}", self.source)
        canvas = np.full((h, w), self.background, np.int32)
        for shape in self.shapes:
            if shape.rle is not None:
                canvas[decode_rle(shape.rle, self.source, (h, w))] = shape.value
            elif shape.polygon:
                fill_polygon(canvas, shape.polygon, shape.value, normalised=self.normalised)
        return canvas


def fill_polygon(canvas: np.ndarray, polygon, value: int, normalised: bool = False) -> None:
    """Fill one polygon (x1, y1, x2, y2, ...; 0..1 units when `normalised`) with `value`, in place; the parts
    outside the canvas are clipped."""
    h, w = canvas.shape[:2]
    points = np.asarray(polygon, np.float64).reshape(-1, 2)
    if normalised:
        points = points * (w, h)
    if np.abs(points).max(initial=0) > FAR * (h + w):  # cv2 takes int32 pixels: cut what lies far out first
        points = clip_polygon(points, w, h)
        if len(points) < 3:
            return
    cv2.fillPoly(canvas, [np.rint(points).astype(np.int32)], int(value))


def clip_polygon(points: np.ndarray, width: float, height: float) -> np.ndarray:
    """(N, 2) polygon cut to the rectangle [-1, width + 1] x [-1, height + 1] (Sutherland-Hodgman): its part over
    the image unchanged, its coordinates small (a vertex at 1e12 would overflow cv2's int32 pixels)."""
    for axis, bound, sign in ((0, -1.0, 1), (0, width + 1.0, -1), (1, -1.0, 1), (1, height + 1.0, -1)):
        cut = []
        for p, q in zip(np.roll(points, 1, axis=0), points):
            p_in, q_in = sign * (p[axis] - bound) >= 0, sign * (q[axis] - bound) >= 0
            if p_in != q_in:
                cut.append(p + (bound - p[axis]) / (q[axis] - p[axis]) * (q - p))
            if q_in:
                cut.append(q)
        points = np.asarray(cut, np.float64).reshape(-1, 2)
        if not len(points):
            break
    return points


def polygon_reach(polygon, width: float, height: float, slack: float) -> str:
    """Where a polygon lies against a width x height image: "inside" (every vertex within `slack` of it),
    "partly" (reaching out further: clipped when drawn) or "outside" (nothing of it on the image)."""
    points = np.asarray(polygon, np.float64).reshape(-1, 2)
    low, high = points.min(axis=0), points.max(axis=0)
    if high[0] <= 0 or high[1] <= 0 or low[0] >= width or low[1] >= height:
        return "outside"
    if low.min() < -slack or high[0] > width + slack or high[1] > height + slack:
        return "partly"
    return "inside"


def polygon_points(values) -> tuple[float, ...] | None:
    """A flat (x1, y1, x2, y2, ...) tuple of floats from a list of numbers or of [x, y] pairs; None when it is not
    one (an odd count, a value that is not a finite number)."""
    flat: list = []
    for v in values:
        if isinstance(v, (list, tuple)):
            flat.extend(v)
        else:
            flat.append(v)
    if len(flat) % 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
        return None
    points = tuple(float(v) for v in flat)
    return points if np.isfinite(points).all() else None


def need_pycocotools(source: Path):
    """pycocotools.mask, or a DataError naming `source` and the extra that installs it."""
    try:
        from pycocotools import mask as mask_api
    except ImportError:
        raise DataError(f"holds RLE masks, which need pycocotools: {FORMATS_EXTRA}", source) from None
    return mask_api


def decode_rle(rle: dict, source: Path, image_hw: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W) bool of a COCO RLE dict (uncompressed `counts` list or compressed string), through pycocotools;
    a DataError naming `source` when it is malformed or (with `image_hw`) of another size than the image."""
    mask_api = need_pycocotools(source)
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
        if isinstance(counts, list):
            if sum(counts) != h * w or min(counts, default=0) < 0:  # pycocotools would leave pixels unwritten
                raise ValueError(f"its counts add up to {sum(counts)}, not {h}x{w} = {h * w} pixels")
            encoded = mask_api.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        else:
            encoded = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        mask = mask_api.decode(encoded)
        # a compressed string that covers fewer pixels leaves the rest of pycocotools' buffer unwritten
        if not np.isin(mask, (0, 1)).all() or int(mask.sum()) != int(mask_api.area(encoded)):
            raise ValueError("its counts do not cover the image")
    except (KeyError, TypeError, ValueError, UnicodeEncodeError) as exc:
        raise DataError(f"an RLE mask cannot be decoded ({exc})", source) from None
    if image_hw is not None and (h, w) != tuple(image_hw):
        raise DataError(f"an RLE mask is {h}x{w} but its image is {image_hw[0]}x{image_hw[1]}", source)
    return mask.astype(bool)


def read_json(path: Path, problems: list[Problem]):
    """An annotation file's JSON, or None with a Problem naming it (unreadable, empty, not valid JSON)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(path, f"cannot read the annotation file ({exc})"))
        return None
    if not text.strip():
        problems.append(Problem(path, "empty annotation file"))
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(Problem(path, f"not valid JSON ({exc})"))
        return None


def read_names(path: Path) -> list[str]:
    """The class names of a text file, a name a line (LabelMe's labels.txt, YOLO's classes.txt); DataError
    naming the file when it cannot be read."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the class names ({exc})", path) from None
    return [line.strip() for line in lines if line.strip()]


def names_listed(items, limit: int = 3) -> str:
    """Up to `limit` items (file names, annotation ids; paths shown by their name), then "and N more": how a
    problem or notice names what it is about."""
    names = [item.name if isinstance(item, Path) else str(item) for item in items]
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
