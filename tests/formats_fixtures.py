"""Tiny datasets in each annotation format, drawn by the tests themselves (never downloaded), and the labels they
must give: the expected masks are computed here independently of segcli's rasteriser (a pixel belongs to a
polygon when its centre lies inside, matplotlib's point-in-polygon), so a test compares segcli's masks against
them with `assert_pixels_match` (exact away from polygon edges, a 1-pixel tolerance at them).

Helpers B and C add to this file; each keeps to their own functions."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from matplotlib.path import Path as MplPath

H, W = 48, 64  # every annotation fixture's image size

# Per image: shapes in drawing order, (class index in segcli's classes: 1.. ; background 0, pixel polygon).
# The second shape of each image overlaps the first, so the order decides those pixels.
SCENES = {
    "a": [(1, [(4, 4), (34, 6), (10, 40)]), (2, [(20, 12), (60, 12), (60, 34), (20, 34)])],
    "b": [(2, [(2, 30), (30, 30), (30, 46), (2, 46)]), (3, [(16, 20), (50, 26), (40, 44), (22, 40)])],
    "c": [(3, [(40, 2), (62, 2), (62, 20), (40, 20)]), (1, [(30, 10), (50, 14), (36, 30)])],
    "d": [(1, [(6, 6), (26, 6), (26, 26), (6, 26)]), (3, [(18, 18), (44, 22), (30, 42)])],
    "e": [(2, [(10, 10), (54, 10), (54, 38), (10, 38)]), (1, [(24, 16), (40, 16), (32, 32)])],
}
TRAIN, VAL = ("a", "b", "c"), ("d", "e")
CLASS_NAMES = ("bird", "cat", "dog")  # the tools' classes 1..3 (sorted: LabelMe sorts them); background is class 0


def polygon_mask(polygon, h: int = H, w: int = W) -> np.ndarray:
    """(h, w) bool: pixels whose centre lies inside the polygon."""
    ys, xs = np.mgrid[0:h, 0:w]
    centres = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], axis=1)
    return MplPath(np.asarray(polygon, float)).contains_points(centres).reshape(h, w)


def expected_labels(shapes, h: int = H, w: int = W, background: int = 0) -> np.ndarray:
    """The labels `shapes` ((value, polygon) in drawing order) must give: each over the ones before."""
    labels = np.full((h, w), background, np.int32)
    for value, polygon in shapes:
        labels[polygon_mask(polygon, h, w)] = value
    return labels


def outline_zone(shapes, h: int = H, w: int = W) -> np.ndarray:
    """(h, w) bool: the pixels a shape's outline passes through (their centre within half a diagonal of it) and
    their neighbours: the 1-pixel tolerance at polygon edges."""
    ys, xs = np.mgrid[0:h, 0:w]
    px, py = xs + 0.5, ys + 0.5
    crossed = np.zeros((h, w), bool)
    for _, polygon in shapes:
        points = np.asarray(polygon, float)
        for (x1, y1), (x2, y2) in zip(points, np.roll(points, -1, axis=0)):
            dx, dy = x2 - x1, y2 - y1
            t = np.clip(((px - x1) * dx + (py - y1) * dy) / max(dx * dx + dy * dy, 1e-12), 0, 1)
            crossed |= np.hypot(px - x1 - t * dx, py - y1 - t * dy) <= np.sqrt(0.5)
    padded = np.pad(crossed, 1)
    return np.any([padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)


def assert_pixels_match(got: np.ndarray, expected: np.ndarray, edges: np.ndarray | None = None) -> None:
    """Equal, except at polygon edges: `edges` (outline_zone's pixels within a pixel of an outline), or without
    it the pixels with another expected label in their 3x3 neighbourhood; and the edges may not take more than
    a fifth of any label's pixels."""
    assert got.shape == expected.shape, (got.shape, expected.shape)
    if edges is None:
        padded = np.pad(expected, 1, mode="edge")
        h, w = expected.shape
        edges = np.zeros_like(expected, bool)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                edges |= padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] != expected
    wrong = got != expected
    assert not (wrong & ~edges).any(), f"labels differ away from edges at {np.argwhere(wrong & ~edges)[:5].tolist()}"
    for value in np.unique(expected):
        inside = expected == value
        assert (got[inside] == value).sum() >= 0.8 * inside.sum(), f"label {value}: too many edge pixels differ"


def assert_scene(got: np.ndarray, name: str, shift: int = 0) -> None:
    """`got` are the labels of SCENES[name] (exact, a 1-pixel tolerance at outlines); `shift` added to classes."""
    expected = scene_labels(name)
    assert_pixels_match(got, np.where(expected > 0, expected + shift, 0), outline_zone(SCENES[name]))


def labels_of(dataset, pair) -> np.ndarray:
    """A pair's labels as every reader gets them (masks.load_labels with the dataset's encoding and mapping)."""
    from segcli.data.masks import load_labels

    return load_labels(pair, dataset.encoding, dataset.classes, dataset.label_mapping)


def assert_drawn(dataset, drawn: dict) -> None:
    """`dataset` holds exactly the drawn splits and images ({split: {image: labels}}), and each pair's labels are
    those of its scene (SCENES[image stem]), with assert_scene's tolerance at outlines."""
    assert {s: sorted(p.image for p in pairs) for s, pairs in dataset.splits.items()} == \
        {s: sorted(images) for s, images in drawn.items()}
    for pairs in dataset.splits.values():
        for pair in pairs:
            assert_scene(labels_of(dataset, pair), pair.image.stem)


def draw_image(path: Path, h: int = H, w: int = W, seed: int = 0) -> Path:
    """A small image with some texture (PNG or JPEG by the extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return path


def _flat(polygon) -> list[float]:
    return [float(v) for point in polygon for v in point]


def rle_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts of a bool mask (column-major runs, starting with a run of zeros)."""
    flat = np.asarray(mask, np.uint8).ravel(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return np.diff(np.concatenate([[0], changes])).tolist()


def coco_file(names, scenes: dict, first_id: int = 1, roboflow_project: str | None = None) -> dict:
    """A COCO dict: one image per scene (file_name NAME.jpg), one polygon annotation per shape, categories
    `names` with ids from `first_id` (class value v -> category first_id + v - 1); with `roboflow_project`, a
    category 0 of that name that every other category names as its supercategory (Roboflow's export)."""
    categories = [{"id": first_id + i, "name": n, "supercategory": roboflow_project or "none"}
                  for i, n in enumerate(names)]
    if roboflow_project:
        categories.insert(0, {"id": 0, "name": roboflow_project, "supercategory": "none"})
    images, annotations = [], []
    for i, (name, shapes) in enumerate(scenes.items(), start=1):
        images.append({"id": i, "file_name": f"{name}.jpg", "height": H, "width": W})
        for value, polygon in shapes:
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": first_id + value - 1,
                                "segmentation": [_flat(polygon)], "iscrowd": 0, "area": 1.0,
                                "bbox": [0, 0, 1, 1]})
    return {"images": images, "categories": categories, "annotations": annotations}


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def make_roboflow_coco(root: Path) -> dict:
    """Roboflow's COCO export: train/ and valid/ with _annotations.coco.json beside the images, category 0 the
    project. Returns what was drawn: {split: {image: expected labels}}."""
    drawn: dict = {}
    for split, folder, names in (("train", "train", TRAIN), ("val", "valid", VAL)):
        scenes = {n: SCENES[n] for n in names}
        write_json(root / folder / "_annotations.coco.json",
                   coco_file(CLASS_NAMES, scenes, first_id=1, roboflow_project="animals"))
        for i, n in enumerate(names):
            drawn.setdefault(split, {})[draw_image(root / folder / f"{n}.jpg", seed=ord(n))] = scene_labels(n)
    return drawn


def make_cvat_coco(root: Path) -> dict:
    """CVAT's COCO 1.0 export of a task with Train and Validation subsets: annotations/instances_SUBSET.json,
    images/SUBSET/. Returns {split: {image: expected labels}}."""
    drawn: dict = {}
    for split, subset, names in (("train", "Train", TRAIN), ("val", "Validation", VAL)):
        write_json(root / "annotations" / f"instances_{subset}.json",
                   coco_file(CLASS_NAMES, {n: SCENES[n] for n in names}))
        for i, n in enumerate(names):
            image = draw_image(root / "images" / subset / f"{n}.jpg", seed=ord(n))
            drawn.setdefault(split, {})[image] = scene_labels(n)
    return drawn


def make_label_studio_coco(root: Path) -> dict:
    """Label Studio's COCO export: result.json with file_name images/NAME.jpg, category ids from 0; all train.
    Returns {"train": {image: expected labels}}."""
    data = coco_file(CLASS_NAMES, SCENES, first_id=0)
    for image in data["images"]:
        image["file_name"] = "images/" + image["file_name"]
    write_json(root / "result.json", data)
    return {"train": {draw_image(root / "images" / f"{n}.jpg", seed=ord(n)): scene_labels(n)
                      for i, n in enumerate(SCENES)}}


def yolo_line(yolo_class: int, polygon, h: int = H, w: int = W) -> str:
    return " ".join([str(yolo_class)] + [f"{x / w:.6f} {y / h:.6f}" for x, y in polygon])


def make_yolo(root: Path, names_file: bool = True) -> dict:
    """Ultralytics' layout: images/{train,val}/NAME.jpg, labels/{train,val}/NAME.txt (YOLO class = value - 1),
    data.yaml with names. Returns {split: {image: expected labels}}."""
    drawn: dict = {}
    for split, names in (("train", TRAIN), ("val", VAL)):
        for i, n in enumerate(names):
            drawn.setdefault(split, {})[draw_image(root / "images" / split / f"{n}.jpg", seed=ord(n))] = scene_labels(n)
            lines = [yolo_line(value - 1, polygon) for value, polygon in SCENES[n]]
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{n}.txt").write_text("\n".join(lines) + "\n")
    if names_file:
        (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames:\n"
                                        + "".join(f"  {i}: {n}\n" for i, n in enumerate(CLASS_NAMES)))
    return drawn


def labelme_file(name: str, shapes) -> dict:
    return {"version": "5.4.1", "flags": {}, "imagePath": f"{name}.jpg", "imageData": None,
            "imageHeight": H, "imageWidth": W,
            "shapes": [{"label": CLASS_NAMES[value - 1], "points": [list(map(float, p)) for p in polygon],
                        "group_id": None, "shape_type": "polygon", "flags": {}} for value, polygon in shapes]}


def make_labelme(root: Path, splits: bool = True) -> dict:
    """LabelMe: NAME.jpg with NAME.json beside it, in train/ and val/ (or all in root, all train). Returns
    {split: {image: expected labels}}."""
    drawn: dict = {}
    for split, names in (("train", TRAIN), ("val", VAL)):
        folder = root / split if splits else root
        for i, n in enumerate(names):
            image = draw_image(folder / f"{n}.jpg", seed=ord(n))
            write_json(folder / f"{n}.json", labelme_file(n, SCENES[n]))
            drawn.setdefault(split if splits else "train", {})[image] = scene_labels(n)
    return drawn


def scene_labels(name: str) -> np.ndarray:
    return expected_labels(SCENES[name])
