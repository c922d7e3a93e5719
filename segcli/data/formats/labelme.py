"""LabelMe JSON: one ``NAME.json`` beside each image (``shapes``, each with ``label``, ``points`` and
``shape_type``), rasterised into semantic masks.

Use it: ``segcli train unet FOLDER`` (``data check``, ``evaluate``, ``data convert`` alike), FOLDER holding
images with their JSON files, or ``train/``, ``val/``, ``test/`` folders that do. The image is the one of the
JSON's name beside it, else the JSON's ``imagePath`` (relative to the JSON); two JSON files of one image are a
problem. An image without a JSON is not annotated yet and is left out, with a notice.

Classes: background is class 0, then the labels of ``labels.txt`` (LabelMe's own file: a name a line;
``__ignore__`` marks the label drawn as ignore, ``_background_`` the background) when FOLDER has one, else every
label the JSON files use, sorted. Pixels no shape covers are background.

Shapes: ``polygon``, ``rectangle`` (two corners) and ``circle`` (centre, a point on the circle) are filled;
``line``, ``linestrip``, ``point``, ``points`` and ``mask`` have no outline to fill and are left out, with a
notice. Drawing (segcli.data.formats.raster): in file order, each shape over the ones before, coordinates rounded
to the nearest pixel (as LabelMe's own ``labelme_json_to_dataset``).

Problems, each naming the JSON file: a file that does not parse or is empty, a label not in labels.txt (drawn as
ignore), an image that is missing, a shape wholly outside the image. Shapes reaching outside are clipped, with
a notice; a file without shapes is all background, with a notice.
"""

from __future__ import annotations

import math
from pathlib import Path

from segcli.data.classes import ClassMap, default_classes
from segcli.data.formats.base import SPLITS, FormatData, Pair, Problem
from segcli.data.formats.raster import (PIXEL_SLACK, Drawing, Shape, names_listed, polygon_points, polygon_reach,
                                        read_json, read_names)
from segcli.data.formats.registry import register_format
from segcli.data.imageio import IMAGE_EXTS
from segcli.errors import DataError

LABELS_FILE = "labels.txt"
IGNORE_LABEL = "__ignore__"
BACKGROUND_LABELS = ("_background_", "background")
FILLED = ("polygon", "rectangle", "circle")


def _json_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))


def _has_image_beside(json_path: Path) -> bool:
    return any(json_path.with_suffix(ext).is_file() or json_path.with_suffix(ext.upper()).is_file()
               for ext in IMAGE_EXTS)


def folders(root: Path) -> list[tuple[str, Path]]:
    """(split, folder) holding LabelMe JSON files beside images: root itself (train), or root/train, val, test.
    Cheap: the names of the files, the first JSON with an image of its name beside it."""
    if not root.is_dir():
        return []
    split = [(s, root / s) for s in SPLITS if (root / s).is_dir()]
    for candidates in ([("train", root)], split):
        found = [(s, f) for s, f in candidates if any(_has_image_beside(j) for j in _json_files(f)[:50])]
        if found:
            return found
    return []


def circle_polygon(cx: float, cy: float, px: float, py: float) -> tuple[float, ...]:
    """A circle (centre, a point on it) as a polygon fine enough that its edge is within a pixel of the circle."""
    r = math.hypot(px - cx, py - cy)
    n = max(16, int(math.ceil(2 * math.pi * r)))
    return tuple(v for k in range(n) for v in (cx + r * math.cos(2 * math.pi * k / n),
                                               cy + r * math.sin(2 * math.pi * k / n)))


def shape_polygon(shape: dict) -> tuple[float, ...] | None:
    """A LabelMe shape's outline as a flat polygon; None when it has none (a line, a point) or is malformed."""
    kind = shape.get("shape_type") or "polygon"
    points = polygon_points(shape.get("points", [])) if isinstance(shape.get("points"), list) else None
    if points is None or kind not in FILLED:
        return None
    if kind == "rectangle" and len(points) == 4:
        x1, y1, x2, y2 = points
        return (x1, y1, x2, y1, x2, y2, x1, y2)
    if kind == "circle" and len(points) == 4:
        return circle_polygon(*points)
    return points if kind == "polygon" and len(points) >= 6 else None


def _load(path: Path, problems: list[Problem]) -> dict | None:
    """The parsed LabelMe dict, or None with a Problem naming the file."""
    data = read_json(path, problems)
    if data is None:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        problems.append(Problem(path, 'not a LabelMe file: expected a "shapes" list'))
        return None
    return data


def _image_of(path: Path, data: dict) -> Path | None:
    """The image of the JSON's own name beside it (LabelMe saves NAME.json beside NAME.jpg), else its imagePath
    (relative to the JSON): an imagePath naming another image (a copied or renamed file) does not pull that one
    in twice."""
    beside = next((c for ext in IMAGE_EXTS for c in (path.with_suffix(ext), path.with_suffix(ext.upper()))
                   if c.is_file()), None)
    given = data.get("imagePath")
    if beside is None and isinstance(given, str) and given:
        candidate = path.parent / given.replace("\\", "/")
        if candidate.is_file():
            return candidate
    return beside


def labelme_classes(root: Path, used: set[str]) -> tuple[ClassMap, dict[str, int], str]:
    """(classes, label -> class index, where they came from): labels.txt's names, else the labels used, sorted;
    background first; __ignore__ mapped to the ignore index."""
    listed = root / LABELS_FILE
    if listed.is_file():
        names, source = read_names(listed), LABELS_FILE
    else:
        names, source = sorted(used), "the labels the JSON files use"
    names = [n for n in names if n != IGNORE_LABEL and n.lower() not in BACKGROUND_LABELS]
    classes = default_classes(len(names) + 1, ["background"] + names)
    mapping = {n: i + 1 for i, n in enumerate(names)}
    mapping.update({b: 0 for b in BACKGROUND_LABELS} | {IGNORE_LABEL: classes.ignore_index})
    return classes, mapping, source


class LabelMe:
    name = "labelme"
    description = "LabelMe: NAME.json beside each image (polygon, rectangle, circle shapes); background = class 0"

    def detect(self, root: Path) -> bool:
        return bool(folders(root))

    def hint(self, root: Path) -> str | None:
        return None

    def read(self, root: Path, problems: list[Problem]) -> FormatData:
        loaded: list[tuple[str, Path, dict]] = []
        unannotated: list[Path] = []
        for split, folder in folders(root):
            jsons = _json_files(folder)
            loaded += [(split, p, d) for p in jsons if (d := _load(p, problems)) is not None]
            stems = {p.stem for p in jsons}
            unannotated += [p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTS
                            and p.stem not in stems and not p.name.startswith(".")]
        used = {str(s.get("label")) for _, _, d in loaded for s in d["shapes"] if isinstance(s, dict)}
        classes, mapping, source = labelme_classes(root, used)
        splits: dict[str, list[Pair]] = {}
        skipped: dict[str, int] = {}
        partly, empty = [], []
        drawn_on: dict[Path, Path] = {}  # image -> the JSON file that annotates it
        for split, path, data in loaded:
            image = _image_of(path, data)
            if image is None:
                problems.append(Problem(path, f"its image {data.get('imagePath')!r} is not there"))
                continue
            if image.resolve() in drawn_on:
                problems.append(Problem(path, f"its image {image.name} is {drawn_on[image.resolve()].name}'s too: "
                                              "left out"))
                continue
            drawn_on[image.resolve()] = path
            h, w = data.get("imageHeight"), data.get("imageWidth")
            size = (int(h), int(w)) if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 else None
            drawn, unknown, outside = [], [], 0
            for shape in (s for s in data["shapes"] if isinstance(s, dict)):
                polygon = shape_polygon(shape)
                if polygon is None:
                    kind = str(shape.get("shape_type") or "polygon")
                    skipped[kind] = skipped.get(kind, 0) + 1
                    continue
                label = str(shape.get("label"))
                if label not in mapping:
                    unknown.append(label)
                reach = polygon_reach(polygon, size[1], size[0], PIXEL_SLACK) if size else "inside"
                if reach == "outside":
                    outside += 1
                    continue
                if reach == "partly":
                    partly.append(path)
                drawn.append(Shape(mapping.get(label, classes.ignore_index), polygon=polygon))
            if unknown:
                problems.append(Problem(path, f"label(s) {names_listed(sorted(set(unknown)))} not in {LABELS_FILE} "
                                              "(drawn as ignore)"))
            if outside:
                problems.append(Problem(path, f"{outside} shape(s) lie wholly outside the {h}x{w} image: not drawn"))
            if not data["shapes"]:
                empty.append(path)
            splits.setdefault(split, []).append(Pair(image, path, Drawing(path, image.name, tuple(drawn), size=size)))
        if not loaded and not problems:
            raise DataError("no LabelMe JSON files found", root)
        notices = [f"classes from {source}, background = class 0 (pixels no shape covers)"]
        if skipped:
            notices.append("shapes without an area to fill, left out: "
                           + ", ".join(f"{kind} x{n}" for kind, n in sorted(skipped.items())))
        if partly:
            notices.append(f"{len(partly)} shape(s) reach outside their image by more than {PIXEL_SLACK:g} pixel: "
                           f"clipped to it ({names_listed(sorted(set(partly)))})")
        if empty:
            notices.append(f"{len(empty)} JSON file(s) without shapes: all background ({names_listed(empty)})")
        if unannotated:
            notices.append(f"{len(unannotated)} image(s) without a LabelMe JSON (not annotated yet): left out "
                           f"({names_listed(unannotated)})")
        return FormatData({s: splits[s] for s in SPLITS if splits.get(s)}, root, classes, encoding="index",
                          notices=notices)


register_format(LabelMe())
