"""YOLO segmentation polygons (Ultralytics, Roboflow, CVAT and Label Studio YOLO exports), rasterised into
semantic masks.

Use it: ``segcli train unet DATASET`` (``data check``, ``evaluate``, ``data convert`` alike), DATASET one of:
- Ultralytics: ``images/{train,val,test}/*.jpg`` with ``labels/{train,val,test}/*.txt`` (or ``images/`` and
  ``labels/`` without split folders: all train);
- Roboflow: ``{train,valid,test}/images`` with ``{train,valid,test}/labels``.
A label file has the image's name with ``.txt``, one object a line: ``CLASS x1 y1 x2 y2 ...``, coordinates 0..1
of the image's width and height. A line of four numbers (``CLASS cx cy w h``, a detection box) is drawn as its
rectangle, with a notice.

Classes: ``names`` of ``data.yaml`` / ``dataset.yaml`` (a list, or a mapping id -> name) when one is there, else
``classes.txt`` or ``obj.names`` (a name a line), else class_0, class_1, ... up to the largest id the labels use.
**Background:** YOLO classes start at 0 and have no background, but a semantic model must learn what no object
covers: trained with unlabelled pixels ignored, it never sees a negative and paints some object class over the
whole image. So a class "background" is added as class 0 and YOLO class c becomes class c + 1 (names[0] already
named "background" is taken as that class, without a shift). An image without a label file, or with an empty one,
is all background (as Ultralytics reads it), with a notice.

Drawing (segcli.data.formats.raster): each line's polygon filled in file order, later lines over earlier ones,
coordinates scaled to the image and rounded to the nearest pixel.

Problems, each naming the file: a line that is not ``CLASS x y ...`` (odd coordinates, under 3 points, not
numbers), a class id outside the names, a polygon wholly outside the image, a label file without its image.
Polygons reaching outside the image are clipped, with a notice.
"""

from __future__ import annotations

import math
from pathlib import Path

from segcli.data.classes import ClassMap, default_classes
from segcli.data.formats.base import SPLITS, FormatData, Pair, Problem, files_by_stem
from segcli.data.formats.raster import NORMALISED_SLACK, Drawing, Shape, names_listed, polygon_reach, read_names
from segcli.data.formats.registry import register_format
from segcli.errors import DataError

YAML_FILES = ("data.yaml", "dataset.yaml", "data.yml", "dataset.yml")
NAME_FILES = ("classes.txt", "obj.names")
SPLIT_DIRS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
BACKGROUND = "background"


def split_folders(root: Path) -> list[tuple[str, Path, Path]]:
    """(split, images folder, labels folder) of a YOLO dataset at `root`; [] when root is none. Names only."""
    if not root.is_dir():
        return []
    images, labels = root / "images", root / "labels"
    found = []
    if images.is_dir() and labels.is_dir():
        found = [(SPLIT_DIRS[d.name], d, labels / d.name) for d in sorted(images.iterdir())
                 if d.is_dir() and d.name in SPLIT_DIRS and (labels / d.name).is_dir()]
        if not found and any(labels.glob("*.txt")):
            found = [("train", images, labels)]
    if not found:
        found = [(SPLIT_DIRS[d.name], d / "images", d / "labels") for d in sorted(root.iterdir())
                 if d.is_dir() and d.name in SPLIT_DIRS and (d / "images").is_dir() and (d / "labels").is_dir()]
    return found


def _yaml_names(path: Path) -> list[str] | None:
    """`names` of an Ultralytics data.yaml: a list, or a mapping id -> name (ids 0..N-1)."""
    try:
        import yaml
    except ImportError:
        raise DataError("reading data.yaml needs PyYAML: pip install pyyaml", path) from None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DataError(f"cannot read the dataset YAML ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                        path) from None
    names = data.get("names") if isinstance(data, dict) else None
    if names is None:
        return None
    if isinstance(names, dict):
        if set(names) != set(range(len(names))):
            raise DataError(f"names: ids must be 0..{len(names) - 1}, got {', '.join(map(str, names))}", path)
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise DataError(f"names must be a list of class names or a mapping id -> name, got {names!r}", path)
    return [str(n) for n in names]


def class_names(root: Path) -> tuple[list[str] | None, Path | None]:
    """The YOLO class names (id order) and the file they came from; (None, None) when no file names them."""
    for name in YAML_FILES:
        if (root / name).is_file():
            names = _yaml_names(root / name)
            if names is not None:
                return names, root / name
    for name in NAME_FILES:
        if (root / name).is_file():
            return read_names(root / name), root / name
    return None, None


def yolo_classes(names: list[str]) -> tuple[ClassMap, int]:
    """segcli's classes for YOLO class `names` (id order) and the shift from a YOLO id to its class: background
    added as class 0 (shift 1), unless names[0] is already "background" (shift 0). A dataset file that names a
    yolo dataset's classes goes through here too, so its classes match what the readers draw."""
    shift = 0 if names and str(names[0]).lower() in (BACKGROUND, "_background_") else 1
    return default_classes(len(names) + shift, [BACKGROUND] * shift + [str(n) for n in names]), shift


def parse_labels(path: Path, problems: list[Problem], found: dict[str, list]) -> list | None:
    """(YOLO class id, polygon in 0..1 units) per line of a label file; a box line (cx cy w h) as its rectangle.
    None, with a Problem naming the file, when it cannot be read or a line is malformed; "boxes" and "empty" in
    `found` collect what the notices tell."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(path, f"cannot read the label file ({exc})"))
        return None
    shapes = []
    for n, line in enumerate(lines, start=1):
        words = line.split()
        if not words:
            continue
        try:
            cid = float(words[0])
            coords = tuple(float(w) for w in words[1:])
        except ValueError:
            problems.append(Problem(path, f"line {n}: expected CLASS x1 y1 x2 y2 ..., numbers"))
            return None
        if not all(map(math.isfinite, coords)):
            problems.append(Problem(path, f"line {n}: a coordinate that is not a number (nan or inf)"))
            return None
        if not math.isfinite(cid) or cid != int(cid) or cid < 0:
            problems.append(Problem(path, f"line {n}: class {words[0]} is not a class id (0, 1, ...)"))
            return None
        if len(coords) == 4:
            cx, cy, w, h = coords
            coords = (cx - w / 2, cy - h / 2, cx + w / 2, cy - h / 2, cx + w / 2, cy + h / 2, cx - w / 2, cy + h / 2)
            found["boxes"].append(path)
        elif len(coords) % 2 or len(coords) < 6:
            problems.append(Problem(path, f"line {n}: {len(coords)} coordinates; expected x y pairs, 3 or more "
                                          "(or a box: cx cy w h)"))
            return None
        shapes.append((int(cid), coords))
    if not shapes:
        found["empty"].append(path)
    return shapes


class Yolo:
    name = "yolo"
    description = ("YOLO segmentation: images/{train,val}/*.jpg + labels/{train,val}/*.txt (class x1 y1 x2 y2 ..., "
                   "0..1), names from data.yaml; background added as class 0")

    def detect(self, root: Path) -> bool:
        return bool(split_folders(root))

    def hint(self, root: Path) -> str | None:
        if root.is_dir() and (root / "labels").is_dir() and not (root / "images").is_dir():
            return "YOLO: labels/ has no images/ beside it"
        return None

    def read(self, root: Path, problems: list[Problem]) -> FormatData:
        names, names_file = class_names(root)
        found: dict[str, list] = {k: [] for k in ("boxes", "empty", "unlabelled", "partly")}
        parsed: dict[str, list[tuple[Path, Path, list | None]]] = {}
        for split, images, labels in split_folders(root):
            image_files = files_by_stem(images, problems)
            label_files = {p.stem: p for p in sorted(labels.glob("*.txt"))}
            for stem, label in label_files.items():
                if stem not in image_files:
                    problems.append(Problem(label, f"label file without image (nothing named {stem}.* in "
                                                   f"{images.name}/)"))
            for stem, image in image_files.items():
                label = label_files.get(stem)
                if label is None:
                    found["unlabelled"].append(image)
                    parsed.setdefault(split, []).append((image, labels / f"{stem}.txt", []))
                else:
                    parsed.setdefault(split, []).append((image, label, parse_labels(label, problems, found)))
        if not parsed:
            raise DataError("no images found in the YOLO folders", root)
        seen = max((cid for items in parsed.values() for _, _, shapes in items for cid, _ in shapes or ()),
                   default=0)
        yolo_names = names if names is not None else [f"class_{i}" for i in range(seen + 1)]
        classes, shift = yolo_classes(yolo_names)
        splits: dict[str, list[Pair]] = {}
        for split, items in parsed.items():
            for image, label, shapes in items:
                if shapes is None:
                    continue  # malformed: a problem below
                drawn, unknown, outside = [], [], 0
                for cid, polygon in shapes:
                    reach = polygon_reach(polygon, 1.0, 1.0, NORMALISED_SLACK)
                    if cid >= len(yolo_names):
                        unknown.append(cid)
                    elif reach == "outside":
                        outside += 1
                    else:
                        drawn.append(Shape(cid + shift, polygon=polygon))
                        if reach == "partly":
                            found["partly"].append(label)
                if unknown:
                    where = f"{names_file.name}'s {len(yolo_names)} names" if names_file else "the names"
                    problems.append(Problem(label, f"class id(s) {names_listed(sorted(set(unknown)))} not among "
                                                   f"{where} (ids 0..{len(yolo_names) - 1}): not drawn"))
                if outside:
                    problems.append(Problem(label, f"{outside} polygon(s) lie wholly outside the image (coordinates "
                                                   "are 0..1 of its width and height): not drawn"))
                splits.setdefault(split, []).append(Pair(image, label, Drawing(label, image.name, tuple(drawn),
                                                                               normalised=True)))
        notices = ["YOLO classes shifted by one: class 0 is background (pixels no polygon covers), YOLO class c is "
                   "class c + 1" if shift else f"{names_file.name}: names[0] is {names[0]!r}, taken as background"]
        if names is None:
            notices.append(f"no data.yaml with names: classes class_0..class_{seen} from the label ids")
        if found["partly"]:
            notices.append(f"{len(found['partly'])} polygon(s) reach outside the image (0..1): clipped to it "
                           f"({names_listed(found['partly'])})")
        if found["boxes"]:
            notices.append(f"{len(found['boxes'])} line(s) are detection boxes (class cx cy w h): drawn as "
                           f"rectangles ({names_listed(sorted(set(found['boxes'])))})")
        if found["unlabelled"] or found["empty"]:
            notices.append(f"{len(found['unlabelled'])} image(s) without a label file and {len(found['empty'])} "
                           "empty label file(s): all background ("
                           f"{names_listed(found['unlabelled'] + found['empty'])})")
        return FormatData({s: splits[s] for s in SPLITS if splits.get(s)}, root, classes, encoding="index",
                          notices=notices)


register_format(Yolo())
