"""COCO-style JSON (instance annotations: polygons and RLE) as CVAT, Label Studio and Roboflow export it,
rasterised by category into semantic masks.

Use it: ``segcli train unet EXPORT`` (``data check``, ``evaluate``, ``data convert`` alike), EXPORT one of:
- Roboflow: ``train/_annotations.coco.json`` (also ``valid/``, ``test/``) with the images beside each file;
- CVAT (COCO 1.0) and COCO itself: ``annotations/instances_SUBSET.json`` with the images in ``images/SUBSET/``,
  ``images/`` or ``SUBSET/`` (``instances_default.json``, ``instances_train2017.json``, ...);
- Label Studio: ``result.json`` with ``images/`` beside it;
- or one COCO JSON file given itself (its images beside it or in ``images/``).
A file's split comes from its folder or subset name: train/training/default, val/valid/validation, test (a
trailing year as in train2017 is dropped); another name is read as train, with a notice.

Classes: the categories in id order, after "background" as class 0. A category named "background" or
"_background_" is that class 0 itself; otherwise a class "background" is added in front (COCO exports have none:
Label Studio's ids start at 0, CVAT's and COCO's at 1), and every pixel no annotation covers is background, so
the model learns what is not an object. Roboflow puts a category 0 that only names the project (every other
category's supercategory): it is no class, and an annotation of it draws background.

Drawing (segcli.data.formats.raster): polygons filled with their coordinates rounded to the nearest pixel, RLE
masks (``counts`` a list or a compressed string) decoded by pycocotools (the optional extra ``segcli[formats]``,
needed only when a file holds RLE). Overlaps: the annotations of an image are drawn in file order, each over the
ones before, except that ``iscrowd`` regions are drawn first, so any instance on top of one wins.

Problems, each naming the JSON file: a file that does not parse or is no COCO file, one without annotations, an
unknown category id, an image listed but not found or listed twice, an image or category id that is no id (a
list, a dict), a polygon wholly outside its image, an RLE mask of another size than its image. Polygons reaching
outside their image are clipped, with a notice per file; images without annotations are all background, with a
notice.
"""

from __future__ import annotations

import re
from pathlib import Path

from segcli.data.classes import default_classes
from segcli.data.formats.base import SPLITS, FormatData, Pair, Problem
from segcli.data.formats.raster import (PIXEL_SLACK, Drawing, Shape, names_listed, need_pycocotools, polygon_points,
                                        polygon_reach, read_json)
from segcli.data.formats.registry import register_format
from segcli.errors import DataError

ROBOFLOW_FILE = "_annotations.coco.json"
LABEL_STUDIO_FILE = "result.json"
BACKGROUND_NAMES = ("background", "_background_")
# what a subset or folder name means (a trailing year dropped: train2017 -> train)
SPLIT_OF = {"train": "train", "training": "train", "default": "train", "val": "val", "valid": "val",
            "validation": "val", "test": "test", "testing": "test"}
# annotations/ files that hold no instance masks
NOT_INSTANCES = ("captions_", "person_keypoints_", "panoptic_", "image_info_", "stuff_")


def split_of(name: str) -> str | None:
    """The split a subset or folder name stands for, None when it names none."""
    return SPLIT_OF.get(re.sub(r"[-_]?\d{4}$", "", name.lower()))


def _subset(json_path: Path) -> str:
    """The subset an annotations/ file names: instances_default.json -> default, train_labels.json -> train."""
    stem = json_path.stem
    stem = stem[len("instances_"):] if stem.startswith("instances_") else stem
    return re.sub(r"_(labels|annotations)$", "", stem)


def _annotations_entry(root: Path, path: Path) -> tuple[str, Path, list[Path]]:
    """A file of ROOT/annotations/: its subset, and where its images may be (CVAT: images/SUBSET/, older CVAT:
    images/, COCO: SUBSET/)."""
    subset = _subset(path)
    return subset, path, [root / "images" / subset, root / "images", root / subset, root]


def annotation_files(root: Path) -> list[tuple[str, Path, list[Path]]]:
    """(subset name, JSON file, folders its images may be in) for every COCO file of an export at `root`; [] when
    root is none. Cheap: looks at names only."""
    if root.is_file():
        if root.suffix.lower() != ".json" or not _looks_like_coco(root):
            return []
        if root.parent.name == "annotations":  # one file of a CVAT or COCO export
            return [_annotations_entry(root.parent.parent, root)]
        return [(root.parent.name, root, [root.parent, root.parent / "images"])]
    if not root.is_dir():
        return []
    found = []
    if (root / ROBOFLOW_FILE).is_file():
        found.append((root.name, root / ROBOFLOW_FILE, [root]))
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if (sub / ROBOFLOW_FILE).is_file():
            found.append((sub.name, sub / ROBOFLOW_FILE, [sub]))
    annotations = root / "annotations"
    if annotations.is_dir():
        found += [_annotations_entry(root, path) for path in sorted(annotations.glob("*.json"))
                  if not path.name.startswith(NOT_INSTANCES)]
    if (root / LABEL_STUDIO_FILE).is_file() and (root / "images").is_dir():
        found.append(("train", root / LABEL_STUDIO_FILE, [root, root / "images"]))
    return found


def _looks_like_coco(path: Path) -> bool:
    """Whether a .json file given itself opens like a COCO file (its first 64 KB name "images" or "categories" and
    no LabelMe "shapes")."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    return (b'"categories"' in head or b'"images"' in head) and b'"shapes"' not in head


def _load(path: Path, problems: list[Problem]) -> dict | None:
    """The parsed COCO dict, or None with a Problem naming the file."""
    data = read_json(path, problems)
    if data is None:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("categories", []), list) or not isinstance(data.get("annotations", []), list):
        problems.append(Problem(path, 'not a COCO file: expected "images", "categories" and "annotations" lists'))
        return None
    return data


def _project_category(categories: list[dict]) -> int | None:
    """The id of Roboflow's category that only names the project (id 0, every other category's supercategory)."""
    zero = [c for c in categories if c.get("id") == 0]
    others = [c for c in categories if c.get("id") != 0]
    if len(zero) == 1 and others and all(c.get("supercategory") == zero[0].get("name") for c in others):
        return 0
    return None


def coco_classes(files: list[tuple[Path, dict]]):
    """(ClassMap, category id -> class index, notices): background first, then the categories of all files in id
    order; a DataError naming the file when an id has two names."""
    names: dict[int, str] = {}
    first: dict[int, Path] = {}
    background_ids: set[int] = set()
    notices = []
    for path, data in files:
        categories = [c for c in data.get("categories", []) if isinstance(c, dict) and isinstance(c.get("id"), int)]
        project = _project_category(categories)
        if project is not None:
            background_ids.add(project)
            name = next(c.get("name") for c in categories if c["id"] == project)
            notices.append(f"{path.name}: category {project} ({name!r}) only names the project (as Roboflow "
                           "exports it): no class, its annotations draw background")
        for c in categories:
            cid, name = c["id"], str(c.get("name", f"category_{c['id']}"))
            if cid == project:
                continue
            if cid in names and names[cid] != name:
                raise DataError(f"category {cid} is {name!r} here but {names[cid]!r} in {first[cid]}", path)
            names.setdefault(cid, name)
            first.setdefault(cid, path)
    mapping: dict[int, int] = {cid: 0 for cid in background_ids}
    class_names = ["background"]
    for cid in sorted(names):
        if names[cid].lower() in BACKGROUND_NAMES:
            mapping[cid] = 0
        else:
            mapping[cid] = len(class_names)
            class_names.append(names[cid])
    return default_classes(len(class_names), class_names), mapping, list(dict.fromkeys(notices))


def _find_image(file_name: str, folders: list[Path]) -> Path | None:
    """The image a COCO file_name names: as a path under one of `folders`, else its bare name in one of them
    (Label Studio writes images/NAME, some exports Windows separators)."""
    rel = Path(file_name.replace("\\", "/"))
    for candidate in [f / rel for f in folders] + [f / rel.name for f in folders]:
        if candidate.is_file():
            return candidate
    return None


def _id(value):
    """An image or category id as COCO writes it (an integer, or text), else None (a list, a dict, a number with a
    fraction: no id an annotation can name)."""
    return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None


def _size(image: dict) -> tuple[int, int] | None:
    """(height, width) an image entry gives, None when it gives none (or no positive integers)."""
    h, w = image.get("height"), image.get("width")
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and v == int(v) for v in (h, w))
    return (int(h), int(w)) if ok else None


def _shapes(image: dict, annotations: list[dict], mapping: dict[int, int], ignore: int,
            found: dict[str, list]) -> tuple[Shape, ...]:
    """An image's annotations as Shapes in drawing order (iscrowd first, then file order). `found` collects
    what the file's problems and notices tell, by kind: "unknown" categories, polygons "outside" or "partly"
    outside the image, RLE masks of the wrong "size", "degenerate" annotations (nothing to fill), "rle" seen."""
    h, w = _size(image) or (0, 0)
    crowd, rest = [], []
    for ann in annotations:
        aid, cid, seg = ann.get("id"), _id(ann.get("category_id")), ann.get("segmentation")
        if cid not in mapping:
            found["unknown"].append(f"{aid} (category {ann.get('category_id')!r})")
        value = mapping.get(cid, ignore)
        target = crowd if ann.get("iscrowd") else rest
        if isinstance(seg, dict):
            found["rle"].append(aid)
            size = seg.get("size")
            if not (isinstance(size, list) and len(size) == 2) or (h and w and list(size) != [h, w]):
                found["size"].append(f"{aid} ({size} for a {h}x{w} image)")
                continue
            target.append(Shape(value, rle={"size": list(size), "counts": seg.get("counts")}))
            continue
        polygons = (seg if seg and isinstance(seg[0], list) else [seg]) if isinstance(seg, list) and seg else []
        if not polygons:
            found["degenerate"].append(aid)  # a box without a segmentation: no outline to fill
        for polygon in polygons:
            points = polygon_points(polygon) if isinstance(polygon, list) else None
            if points is None or len(points) < 6:
                found["degenerate"].append(aid)
                continue
            reach = polygon_reach(points, w, h, PIXEL_SLACK) if h and w else "inside"
            if reach == "outside":
                found["outside"].append(f"{aid} ({image.get('file_name')})")
                continue
            if reach == "partly":
                found["partly"].append(aid)
            target.append(Shape(value, polygon=points))
    return tuple(crowd + rest)


def _read_file(path: Path, data: dict, folders: list[Path], mapping: dict[int, int], ignore: int,
               problems: list[Problem], notices: list[str]) -> list[Pair]:
    annotations = [a for a in data.get("annotations", []) if isinstance(a, dict)]
    if not annotations:
        problems.append(Problem(path, "no annotations: every image would be all background"))
        return []
    by_image: dict = {}
    for ann in annotations:
        by_image.setdefault(_id(ann.get("image_id")), []).append(ann)
    found: dict[str, list] = {k: [] for k in ("unknown", "outside", "partly", "size", "degenerate", "rle")}
    pairs, bare, missing, twice, taken = [], [], [], [], set()
    for image in data["images"]:
        if not isinstance(image, dict) or not isinstance(image.get("file_name"), str):
            problems.append(Problem(path, f"an image entry without a file_name: {str(image)[:80]}"))
            continue
        if _id(image.get("id")) is None:
            problems.append(Problem(path, f"image {image['file_name']}: its id {image.get('id')!r} is no id (an "
                                          "integer or text) its annotations can name"))
            continue
        image_path = _find_image(image["file_name"], folders)
        if image_path is None:
            missing.append(image["file_name"])
            continue
        if image_path in taken:
            twice.append(image["file_name"])
            continue
        taken.add(image_path)
        shapes = _shapes(image, by_image.get(image.get("id"), []), mapping, ignore, found)
        if not by_image.get(image.get("id")):
            bare.append(image_path)
        pairs.append(Pair(image_path, path, Drawing(path, image_path.name, shapes, size=_size(image))))
    listed = {_id(image.get("id")) for image in data["images"] if isinstance(image, dict)} - {None}
    strays = [a.get("id") for a in annotations if _id(a.get("image_id")) not in listed]
    if strays:
        problems.append(Problem(path, f"{len(strays)} annotation(s) of an image id not in its images (not drawn): "
                                      f"annotations {names_listed(strays)}"))
    if found["unknown"]:
        problems.append(Problem(path, f"{len(found['unknown'])} annotation(s) with a category id not in its "
                                      f"categories (drawn as ignore): {names_listed(found['unknown'])}"))
    if found["outside"]:
        problems.append(Problem(path, f"{len(found['outside'])} polygon(s) lie wholly outside their image (not "
                                      f"drawn): annotations {names_listed(found['outside'])}"))
    if found["size"]:
        problems.append(Problem(path, f"{len(found['size'])} RLE mask(s) of another size than their image (not "
                                      f"drawn): annotations {names_listed(found['size'])}"))
    if missing:
        problems.append(Problem(path, f"{len(missing)} image(s) listed but not found (looked in "
                                      f"{', '.join(str(f) for f in folders if f.is_dir()) or 'no folder'}): "
                                      f"{names_listed(missing)}"))
    if twice:
        problems.append(Problem(path, f"{len(twice)} image(s) listed twice, under two ids (the second entry's "
                                      f"annotations not drawn): {names_listed(twice)}"))
    if found["rle"]:
        need_pycocotools(path)  # one line naming the extra, before any image is read
    if found["partly"]:
        notices.append(f"{path.name}: {len(found['partly'])} polygon(s) reach outside their image by more than "
                       f"{PIXEL_SLACK:g} pixel: clipped to it (annotations {names_listed(found['partly'])})")
    if found["degenerate"]:
        notices.append(f"{path.name}: {len(found['degenerate'])} annotation(s) without an area to fill (a box "
                       "without segmentation, a polygon under 3 points): not drawn (annotations "
                       f"{names_listed(found['degenerate'])})")
    if bare:
        notices.append(f"{path.name}: {len(bare)} image(s) without annotations: all background "
                       f"({names_listed(bare)})")
    return pairs


class Coco:
    name = "coco"
    description = ("COCO JSON (CVAT annotations/instances_*.json, Roboflow train/_annotations.coco.json, "
                   "Label Studio result.json): polygons and RLE rasterised by category, background = class 0")

    def detect(self, root: Path) -> bool:
        return bool(annotation_files(root))

    def hint(self, root: Path) -> str | None:
        others = sorted((root / "annotations").glob("*.json")) if root.is_dir() else []
        if others:  # every one a caption, keypoint or panoptic file (detect took any other)
            return (f"COCO: annotations/ holds {', '.join(p.name for p in others[:3])} but no instance masks "
                    "(instances_*.json)")
        return None

    def read(self, root: Path, problems: list[Problem]) -> FormatData:
        loaded = [(subset, path, folders, data) for subset, path, folders in annotation_files(root)
                  if (data := _load(path, problems)) is not None]
        if not loaded:
            raise DataError(f"no readable COCO annotation file: {problems[0].path}: {problems[0].problem}" if problems
                            else "no COCO annotation file found", root)
        classes, mapping, notices = coco_classes([(path, data) for _, path, _, data in loaded])
        splits: dict[str, list[Pair]] = {}
        for subset, path, folders, data in loaded:
            split = split_of(subset) or ("train" if path.name == LABEL_STUDIO_FILE or root.is_file() else None)
            if split is None:
                split = "train"
                notices.append(f"{path.name}: subset {subset!r} names no split (train, val, test): read as train")
            splits.setdefault(split, []).extend(_read_file(path, data, folders, mapping, classes.ignore_index,
                                                           problems, notices))
        base = root.parent if root.is_file() else root
        return FormatData({s: splits[s] for s in SPLITS if splits.get(s)}, base, classes, encoding="index",
                          notices=notices)


register_format(Coco())
