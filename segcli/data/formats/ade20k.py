"""ADE20K as the MIT Scene Parsing benchmark ships it (ADEChallengeData2016, 150 classes).

Use it: ``segcli train unet ADEChallengeData2016`` (``data check``, ``evaluate`` alike; the folder holding
``ADEChallengeData2016/`` works too).

Pairs ``images/{training,validation}/NAME.jpg`` with ``annotations/{training,validation}/NAME.png`` (train and
val). The annotations store 0 for "other" (unlabelled) and 1..150 for the classes of objectInfo150.txt: 0 becomes
the ignore label 255 and 1..150 become 0..149. Class names are the first name of each objectInfo150 entry
(wall, building, sky, floor, ...); their colours are segcli's default palette (the palette that toolkits draw
ADE20K in repeats a colour, which a classes file may not).
"""

from __future__ import annotations

from pathlib import Path

from segcli.data.classes import ClassMap, default_classes
from segcli.data.formats.base import FormatData, Problem, match_pairs
from segcli.data.formats.registry import register_format

FOLDER = "ADEChallengeData2016"
SPLIT_FOLDERS = (("train", "training"), ("val", "validation"))
# objectInfo150.txt's order, each entry's first name
CLASS_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van",
    "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel",
    "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)
IGNORE = 255
LABEL_MAPPING = {stored: stored - 1 for stored in range(1, len(CLASS_NAMES) + 1)}  # 0 ("other") -> ignore


def ade20k_classes() -> ClassMap:
    """The 150 ADE20K classes (segcli's default colours); 255, stored 0 ("other"), ignored."""
    classes = default_classes(len(CLASS_NAMES), list(CLASS_NAMES))
    return ClassMap(classes.names, classes.colors, IGNORE, "other", (0, 0, 0))


def ade_folder(root: Path) -> Path | None:
    """ADEChallengeData2016 at `root` or inside it: the folder with images/ and annotations/ holding training/ or
    validation/; None when there is none."""
    for folder in (root, root / FOLDER):
        if any((folder / "images" / f).is_dir() and (folder / "annotations" / f).is_dir() for _, f in SPLIT_FOLDERS):
            return folder
    return None


class ADE20K:
    name = "ade20k"
    description = ("ADE20K (ADEChallengeData2016): images + annotations/{training,validation}; 0 ignored, "
                   "1..150 -> 0..149")

    def detect(self, root: Path) -> bool:
        return root.is_dir() and ade_folder(root) is not None

    def hint(self, root: Path) -> str | None:
        for folder in (root, root / FOLDER):
            images = any((folder / "images" / f).is_dir() for _, f in SPLIT_FOLDERS)
            if images and not (folder / "annotations").is_dir():
                return (f"ADE20K: {folder.name}/images/ found but no annotations/ beside it (with training/ and "
                        "validation/ PNGs)")
        return None

    def read(self, root: Path, problems: list[Problem]) -> FormatData:
        folder = ade_folder(root) or root
        splits = {}
        for split, name in SPLIT_FOLDERS:
            images, annotations = folder / "images" / name, folder / "annotations" / name
            if images.is_dir() and annotations.is_dir():
                splits[split] = match_pairs(images, annotations, problems)
            elif images.is_dir():
                problems.append(Problem(images, f"no annotations/{name}/ beside it: its images are not used"))
        return FormatData(splits={s: p for s, p in splits.items() if p}, base=folder, classes=ade20k_classes(),
                          encoding="index", label_mapping=dict(LABEL_MAPPING),
                          notices=["labels: 0 (other) ignored, 1..150 read as classes 0..149"])


register_format(ADE20K())
