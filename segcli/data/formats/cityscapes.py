"""Cityscapes (fine annotations): the 19 evaluation classes from gtFine's label IDs.

Use it: ``segcli train unet cityscapes`` (``data check``, ``evaluate`` alike), where ``cityscapes/`` holds
``leftImg8bit/`` and ``gtFine/`` as the two zips unpack (leftImg8bit_trainvaltest.zip, gtFine_trainvaltest.zip).

Pairs ``leftImg8bit/{train,val,test}/CITY/NAME_leftImg8bit.png`` with ``gtFine/SPLIT/CITY/NAME_gtFine_*.png``.
``*_labelIds.png`` hold the 34 label IDs: mapped to the 19 train IDs of cityscapesScripts' labels.py (road 7 -> 0,
..., bicycle 33 -> 18), every other ID (unlabeled, ego vehicle, parking, rail track, guard rail, caravan, ...) to
the ignore label 255. ``*_labelTrainIds.png`` (cityscapesScripts' createTrainIdLabelImgs.py writes them) are used
as they are when every image has one; they are made from the label IDs, so a tree where some are missing is read
from ``*_labelIds.png`` throughout, with a notice, not half from each. The classes come with their official
colours.

The public test split has no labels (its gtFine masks map to ignore everywhere): a test split whose sampled
masks hold no class pixel is left out, with a notice; test masks that do hold labels (your own) are kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segcli.data.classes import ClassMap
from segcli.data.formats.base import SPLITS, FormatData, Pair, Problem
from segcli.data.formats.registry import register_format
from segcli.data.imageio import read_label_png
from segcli.errors import DataError

IGNORE = 255
# (label ID, train ID's name, colour) of the 19 classes, in train ID order (cityscapesScripts' labels.py)
TRAIN_CLASSES = (
    (7, "road", (128, 64, 128)), (8, "sidewalk", (244, 35, 232)), (11, "building", (70, 70, 70)),
    (12, "wall", (102, 102, 156)), (13, "fence", (190, 153, 153)), (17, "pole", (153, 153, 153)),
    (19, "traffic light", (250, 170, 30)), (20, "traffic sign", (220, 220, 0)), (21, "vegetation", (107, 142, 35)),
    (22, "terrain", (152, 251, 152)), (23, "sky", (70, 130, 180)), (24, "person", (220, 20, 60)),
    (25, "rider", (255, 0, 0)), (26, "car", (0, 0, 142)), (27, "truck", (0, 0, 70)), (28, "bus", (0, 60, 100)),
    (31, "train", (0, 80, 100)), (32, "motorcycle", (0, 0, 230)), (33, "bicycle", (119, 11, 32)),
)
LABEL_TO_TRAIN = {label_id: train_id for train_id, (label_id, _, _) in enumerate(TRAIN_CLASSES)}
IMAGE_SUFFIX = "_leftImg8bit.png"
IDS_SUFFIX = "_gtFine_labelIds.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
TEST_SAMPLE = 3  # test masks read to tell the public (label-less) test split from a labelled one


def cityscapes_classes() -> ClassMap:
    """The 19 Cityscapes train classes in their official colours; 255 ignored."""
    return ClassMap(tuple(n for _, n, _ in TRAIN_CLASSES), tuple(c for _, _, c in TRAIN_CLASSES), IGNORE,
                    "void", (0, 0, 0))


def _stem(image: Path) -> str:
    return image.name[: -len(IMAGE_SUFFIX)]


def _split_pairs(root: Path, split: str, problems: list[Problem]) -> list[tuple[Path, Path, Path]]:
    """(image, labelIds file, labelTrainIds file) per image of one split; images without either mask file and
    mask files without an image are problems."""
    found = []
    images = root / "leftImg8bit" / split
    for city in sorted(p for p in images.iterdir() if p.is_dir()):
        labels = root / "gtFine" / split / city.name
        named = set()
        for image in sorted(city.glob(f"*{IMAGE_SUFFIX}")):
            stem = _stem(image)
            named.add(stem)
            ids, train_ids = labels / f"{stem}{IDS_SUFFIX}", labels / f"{stem}{TRAIN_IDS_SUFFIX}"
            if ids.is_file() or train_ids.is_file():
                found.append((image, ids, train_ids))
            else:
                problems.append(Problem(image, f"no {ids.name} in gtFine/{split}/{city.name}/"))
        masks = sorted(labels.glob(f"*{IDS_SUFFIX}")) if labels.is_dir() else []
        problems += [Problem(mask, f"mask without image (no {stem}{IMAGE_SUFFIX} in leftImg8bit/{split}/{city.name}/)")
                     for mask in masks if (stem := mask.name[: -len(IDS_SUFFIX)]) not in named]
    return found


def _unlabelled(masks: list[Path], mapping: dict[int, int] | None) -> bool:
    """Whether up to TEST_SAMPLE evenly spread masks hold no class pixel (all ignore once mapped); False when one
    cannot be read (data check names it)."""
    picks = sorted({masks[round(i * (len(masks) - 1) / max(TEST_SAMPLE - 1, 1))] for i in range(TEST_SAMPLE)})
    for path in picks:
        try:
            raw = read_label_png(path)
        except DataError:
            return False
        values = np.unique(raw)
        classes = [mapping.get(int(v), IGNORE) if mapping is not None else int(v) for v in values]
        if any(c != IGNORE for c in classes):
            return False
    return True


class Cityscapes:
    name = "cityscapes"
    description = ("Cityscapes: leftImg8bit + gtFine city folders, labelIds mapped to the 19 train IDs "
                   "(labelTrainIds when every image has one)")

    def detect(self, root: Path) -> bool:
        return (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir()

    def hint(self, root: Path) -> str | None:
        images, labels = (root / "leftImg8bit").is_dir(), (root / "gtFine").is_dir()
        if images and not labels:
            return ("Cityscapes: leftImg8bit/ found but no gtFine/ beside it: unpack gtFine_trainvaltest.zip "
                    "(the fine labels) here")
        if labels and not images:
            return ("Cityscapes: gtFine/ found but no leftImg8bit/ beside it: unpack leftImg8bit_trainvaltest.zip "
                    "(the images) here")
        return None

    def read(self, root: Path, problems: list[Problem]) -> FormatData:
        found = {s: _split_pairs(root, s, problems) for s in SPLITS if (root / "leftImg8bit" / s).is_dir()}
        triples = [t for split in found.values() for t in split]
        with_train_ids = sum(t.is_file() for _, _, t in triples)
        notices = []
        if triples and with_train_ids == len(triples):
            mapping, pick = None, 2
            notices.append("labels: *_labelTrainIds.png (train IDs, 255 ignored)")
        else:
            mapping, pick = dict(LABEL_TO_TRAIN), 1
            notices.append("labels: *_labelIds.png mapped to the 19 train IDs (other IDs ignored)")
            if with_train_ids:
                notices.append(f"only {with_train_ids} of {len(triples)} images have a *_labelTrainIds.png: "
                               "*_labelIds.png read for all")
            missing = [ids for _, ids, _ in triples if not ids.is_file()]
            problems += [Problem(ids, "no labelIds mask (and not every image has a labelTrainIds one)")
                         for ids in missing]
        splits = {s: [Pair(t[0], t[pick]) for t in split if t[pick].is_file()] for s, split in found.items()}
        test = splits.get("test")
        if test and _unlabelled([p.mask for p in test], mapping):
            notices.append(f"test: {len(test)} image(s) left out: their gtFine masks hold no labels (Cityscapes' "
                           "test labels are not public)")
            del splits["test"]
        return FormatData(splits={s: p for s, p in splits.items() if p}, base=root, classes=cityscapes_classes(),
                          encoding="index", label_mapping=mapping, notices=notices)


register_format(Cityscapes())
