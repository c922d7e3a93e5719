"""Tiny benchmark datasets (Pascal VOC, Cityscapes, ADE20K) drawn in their layouts, for tests/test_format_voc.py,
test_format_cityscapes.py and test_format_ade20k.py (nothing downloaded); the annotation-tool formats have theirs
in formats_fixtures.py.

Each maker writes a dataset under the folder it is given and returns what it drew: per split, image path -> the
(H, W) training IDs its labels must read as (the format's mapping applied, ignored pixels 255). Masks are drawn
in 4x4 blocks, so labels are compared exactly, pixel for pixel.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from segcli.data.imageio import write_image, write_mask_png

H, W = 24, 32  # every image here
IGNORE = 255


def assert_labels_match(dataset, drawn: dict[str, dict[Path, np.ndarray]]) -> None:
    """`dataset` (segcli.data.open_dataset) holds exactly the drawn splits and images, and each pair's labels, as
    every reader gets them (masks.load_labels: the dataset's encoding and label mapping), equal the drawn ones
    pixel for pixel."""
    from segcli.data.masks import load_labels

    assert {s: sorted(p.image for p in pairs) for s, pairs in dataset.splits.items()} == \
        {s: sorted(images) for s, images in drawn.items()}
    for split, pairs in dataset.splits.items():
        for pair in pairs:
            labels = load_labels(pair, dataset.encoding, dataset.classes, dataset.label_mapping)
            np.testing.assert_array_equal(labels, drawn[split][pair.image], err_msg=str(pair.mask))


def check_train_evaluate(cli, data: Path, tmp_path: Path, drawn: dict[str, dict[Path, np.ndarray]],
                         layout: str) -> dict:
    """What the user runs, end to end: `data check` (clean, this layout, the drawn pairs and ignore share),
    `train unet` for one epoch of the tests' tiny U-Net on 24x32 crops, `evaluate` of its best.keras on val (the
    drawn val's ignored pixels left out of the scores). Returns evaluate's JSON."""
    from conftest import tiny_recipe

    result = cli("data", "check", data, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    labels = [a for split in drawn.values() for a in split.values()]
    assert report["layout"] == layout and report["counts"] == {s: len(p) for s, p in drawn.items()}
    assert report["void"]["pixel_share"] == pytest.approx(sum(int((a == IGNORE).sum()) for a in labels)
                                                          / sum(a.size for a in labels))
    run = tmp_path / "run"
    result = cli("train", "unet", data, "--recipe", tiny_recipe(tmp_path, epochs=1), "--size", f"{H}x{W}",
                 "--batch-size", "2", "--out", run)
    assert result.exit_code == 0, result.output
    result = cli("evaluate", run / "best.keras", data, "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    val = list(drawn["val"].values())
    assert scores["ignored_pixels"] == sum(int((a == IGNORE).sum()) for a in val)
    assert scores["pixels"] == sum(int((a != IGNORE).sum()) for a in val)
    return scores


def draw_labels(rng: np.random.Generator, values, h: int = H, w: int = W, block: int = 4) -> np.ndarray:
    """(h, w) int32 labels: block x block squares, each one of `values`, every value drawn at least once (when
    there are cells enough)."""
    values = np.asarray(list(values))
    cells = (h // block) * (w // block)
    picks = np.concatenate([rng.permutation(values)[:cells], rng.choice(values, max(cells - len(values), 0))])
    grid = rng.permutation(picks[:cells]).reshape(h // block, w // block)
    return np.kron(grid, np.ones((block, block), np.int64)).astype(np.int32)


def random_image(path: Path, rng: np.random.Generator) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    return path


def write_grey_png(path: Path, labels: np.ndarray) -> Path:
    """An 8-bit single-channel PNG of `labels` (0..255), the way benchmark label files are stored."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.asarray(labels, np.uint8))
    return path


# --- Pascal VOC 2012 ------------------------------------------------------------------------------------------

def make_voc(root: Path, train: int = 2, val: int = 2, aug: int = 0, aug_list: str | None = "train_aug",
             seed: int = 0) -> dict[str, dict[Path, np.ndarray]]:
    """VOC2012 under root: palette masks (classes 0..20 and the 255 border) for `train` + `val` listed names.
    aug > 0 adds SegmentationClassAug/ (grey PNGs) holding `aug` new names plus every train and val name (as the
    VOCAug download does), and, unless aug_list is None, the list ImageSets/Segmentation/{aug_list}.txt naming
    all of them as "/JPEGImages/N.jpg /SegmentationClassAug/N.png" lines. The expected splits: val stays val;
    the new aug names are extra train pairs."""
    from segcli.data.formats.voc import voc_colour

    rng = np.random.default_rng(seed)
    palette, values = np.array([voc_colour(i) for i in range(256)], np.uint8), [*range(21), IGNORE]
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    drawn: dict[str, dict[Path, np.ndarray]] = {"train": {}, "val": {}}
    names = {"train": [f"2007_{i:06d}" for i in range(train)], "val": [f"2007_{100 + i:06d}" for i in range(val)]}
    (root / "SegmentationClass").mkdir()
    for split, split_names in names.items():
        (lists / f"{split}.txt").write_text("".join(f"{n}\n" for n in split_names))
        for name in split_names:
            labels = draw_labels(rng, values)
            write_mask_png(root / "SegmentationClass" / f"{name}.png", labels, palette)
            drawn[split][random_image(root / "JPEGImages" / f"{name}.jpg", rng)] = labels
    if aug:
        extra = [f"2008_{i:06d}" for i in range(aug)]
        for name in names["train"] + names["val"]:  # the same labels as SegmentationClass, as grey indices
            image = root / "JPEGImages" / f"{name}.jpg"
            labels = drawn["train"].get(image, drawn["val"].get(image))
            write_grey_png(root / "SegmentationClassAug" / f"{name}.png", labels)
        for name in extra:
            labels = draw_labels(rng, values)
            write_grey_png(root / "SegmentationClassAug" / f"{name}.png", labels)
            drawn["train"][random_image(root / "JPEGImages" / f"{name}.jpg", rng)] = labels
        if aug_list is not None:
            listed = names["train"] + extra + names["val"]
            (lists / f"{aug_list}.txt").write_text(
                "".join(f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png\n" for n in listed))
    return drawn


# --- Cityscapes ----------------------------------------------------------------------------------------------

# labelId -> trainId, typed out here from cityscapesScripts' labels.py so the module's own table is checked
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                        26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_CITIES = {"train": {"aachen": 2, "bochum": 1}, "val": {"frankfurt": 1}, "test": {"berlin": 1}}


def make_cityscapes(root: Path, cities: dict[str, dict[str, int]] | None = None, train_ids: bool = False,
                    test_labels: bool = False, seed: int = 0) -> dict[str, dict[Path, np.ndarray]]:
    """leftImg8bit/ + gtFine/ under root, `cities` images per split and city (CITYSCAPES_CITIES by default).
    gtFine holds *_labelIds.png drawn from every label ID 0..33; with train_ids also *_labelTrainIds.png, drawn
    on their own (so a test can tell which file was read). Test masks are like the public download's (IDs 0-3,
    all ignored once mapped) unless test_labels. Returns the expected train IDs, test's only with test_labels."""
    rng = np.random.default_rng(seed)
    drawn: dict[str, dict[Path, np.ndarray]] = {}
    for split, per_city in (CITYSCAPES_CITIES if cities is None else cities).items():
        for city, count in per_city.items():
            for i in range(count):
                stem = f"{city}_{i:06d}_000019"
                image = random_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", rng)
                labels = root / "gtFine" / split / city
                public_test = split == "test" and not test_labels
                ids = draw_labels(rng, range(4) if public_test else range(34))
                write_grey_png(labels / f"{stem}_gtFine_labelIds.png", ids)
                expected = np.vectorize(lambda v: CITYSCAPES_TRAIN_IDS.get(int(v), IGNORE))(ids).astype(np.int32)
                if train_ids:
                    expected = draw_labels(rng, [*range(19), IGNORE])
                    write_grey_png(labels / f"{stem}_gtFine_labelTrainIds.png", expected)
                if not public_test:
                    drawn.setdefault(split, {})[image] = expected
    return drawn


# --- ADE20K --------------------------------------------------------------------------------------------------

def make_ade20k(root: Path, train: int = 2, val: int = 1, seed: int = 0) -> dict[str, dict[Path, np.ndarray]]:
    """ADEChallengeData2016's layout under root: images/{training,validation}/*.jpg and annotations/*.png
    holding 0 (other) and classes 1..150 (both ends drawn in every mask). Expected: 0 -> 255, v -> v - 1."""
    rng = np.random.default_rng(seed)
    drawn: dict[str, dict[Path, np.ndarray]] = {}
    for split, folder, count, prefix in (("train", "training", train, "train"), ("val", "validation", val, "val")):
        for i in range(count):
            name = f"ADE_{prefix}_{i + 1:08d}"
            stored = draw_labels(rng, [0, 1, 150, *rng.choice(np.arange(2, 150), 20, replace=False)])
            write_grey_png(root / "annotations" / folder / f"{name}.png", stored)
            image = random_image(root / "images" / folder / f"{name}.jpg", rng)
            drawn.setdefault(split, {})[image] = np.where(stored == 0, IGNORE, stored - 1).astype(np.int32)
    return drawn
