"""Pascal VOC 2012 segmentation, with the SBD-augmented train set when it is there.

Use it: ``segcli train unet VOCdevkit/VOC2012`` (``data check``, ``evaluate`` alike); the folder given may be
``VOC2012`` itself or one holding ``VOC2012/`` or ``VOCdevkit/VOC2012/``.

Reads ``JPEGImages/NAME.jpg`` with ``SegmentationClass/NAME.png`` (palette PNGs: the palette index is the class)
for the names listed in ``ImageSets/Segmentation/train.txt`` and ``val.txt`` (and ``test.txt`` where its names
have masks: VOC's own test labels are not public, so its test list is left out with a notice). The 21 VOC
classes (background, aeroplane, ..., tvmonitor) with VOC's palette colours; 255, the border drawn around
objects, is the ignore label.

The augmented set (SBD, 10582 train images) is read as the common "VOCAug" layout has it: masks as PNGs in
``SegmentationClassAug/`` (grey class indices, 255 ignore) and the names from a list file
(``ImageSets/Segmentation/train_aug.txt``, ``trainaug.txt`` or ``aug.txt``, or ``train_aug.txt`` beside
``JPEGImages``; a line is a name or an ``/JPEGImages/NAME.jpg /SegmentationClassAug/NAME.png`` pair), or, with no
list, every PNG in ``SegmentationClassAug/``. Those names become extra train pairs, never one of val's. SBD's own
``cls/*.mat`` files are not read (MATLAB files): convert them to ``SegmentationClassAug`` PNGs first.
"""

from __future__ import annotations

from pathlib import Path

from segcli.data.classes import ClassMap
from segcli.data.formats.base import FormatData, Pair, Problem
from segcli.data.formats.registry import register_format
from segcli.errors import DataError

CLASS_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
BORDER = 255  # the ignore label: object borders and difficult regions
BORDER_COLOUR = (224, 224, 192)  # entry 255 of VOC's palette
AUG_MASKS = "SegmentationClassAug"
AUG_LISTS = ("ImageSets/Segmentation/train_aug.txt", "ImageSets/Segmentation/trainaug.txt",
             "ImageSets/Segmentation/aug.txt", "train_aug.txt")
LIST_SPLITS = ("train", "val", "test")


def voc_colour(index: int) -> tuple[int, int, int]:
    """Entry `index` of VOC's palette (the devkit's bit-interleaved colour map)."""
    rgb = [0, 0, 0]
    for shift in range(7, -1, -1):
        for channel in range(3):
            rgb[channel] |= ((index >> channel) & 1) << shift
        index >>= 3
    return tuple(rgb)


def voc_classes() -> ClassMap:
    """The 21 VOC classes in VOC's colours; 255 (the border) ignored."""
    return ClassMap(CLASS_NAMES, tuple(voc_colour(i) for i in range(len(CLASS_NAMES))), BORDER, "border",
                    BORDER_COLOUR)


def voc_folder(root: Path) -> Path | None:
    """The VOC2012 folder at or under `root` (root, root/VOC2012, root/VOCdevkit/VOC2012) holding JPEGImages and
    a mask folder; None when there is none."""
    for folder in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (folder / "JPEGImages").is_dir() and any((folder / m).is_dir() for m in ("SegmentationClass", AUG_MASKS)):
            return folder
    return None


def _read_list(path: Path, problems: list[Problem]) -> list[str]:
    """The image names a VOC list file holds, in order, each once: a line's first word, as a name or the stem
    of a path (``/JPEGImages/NAME.jpg ...``)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(path, f"cannot read the list ({exc})"))
        return []
    names = [Path(line.split()[0]).stem for line in lines if line.strip()]
    return list(dict.fromkeys(names))


def _pair(folder: Path, name: str, masks: tuple[str, ...], listed: Path, problems: list[Problem] | None) -> Pair | None:
    """JPEGImages/NAME.jpg with the first of masks/NAME.png there; a Problem naming the list when one is missing
    (none when `problems` is None: the test list, whose masks are rarely there)."""
    image = folder / "JPEGImages" / f"{name}.jpg"
    mask = next((folder / m / f"{name}.png" for m in masks if (folder / m / f"{name}.png").is_file()), None)
    if mask is None:
        if problems is not None:
            problems.append(Problem(folder / masks[0] / f"{name}.png", f"listed in {listed.name} but missing"))
        return None
    if not image.is_file():
        if problems is not None:
            problems.append(Problem(image, f"listed in {listed.name} but missing"))
        return None
    return Pair(image, mask)


def _aug_names(folder: Path, problems: list[Problem]) -> tuple[list[str], str]:
    """The augmented set's names and where they came from (its list file, or the folder's PNGs)."""
    for rel in AUG_LISTS:
        if (folder / rel).is_file():
            return _read_list(folder / rel, problems), rel
    return sorted(p.stem for p in (folder / AUG_MASKS).glob("*.png")), f"{AUG_MASKS}/"


class VOC:
    name = "voc"
    description = ("Pascal VOC 2012: JPEGImages, palette SegmentationClass, ImageSets/Segmentation lists, "
                   "255 = ignore; SegmentationClassAug (SBD) as extra train pairs")

    def detect(self, root: Path) -> bool:
        folder = voc_folder(root) if root.is_dir() else None
        return folder is not None and (folder / "ImageSets" / "Segmentation").is_dir()

    def hint(self, root: Path) -> str | None:
        if not root.is_dir():
            return None
        folder = voc_folder(root)
        if folder is not None:
            return (f"Pascal VOC: {folder.name}/ has JPEGImages/ and masks but no ImageSets/Segmentation/ with "
                    "train.txt and val.txt (the split lists of VOCtrainval_11-May-2012.tar)")
        for base in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
            if (base / "JPEGImages").is_dir() and (base / "ImageSets" / "Segmentation").is_dir():
                return (f"Pascal VOC: {base.name}/ has JPEGImages/ but no SegmentationClass/ (nor "
                        f"{AUG_MASKS}/): the segmentation masks are missing")
        return None

    def read(self, root: Path, problems: list[Problem]) -> FormatData:
        folder = voc_folder(root) or root
        lists = folder / "ImageSets" / "Segmentation"
        notices: list[str] = []
        listed = {s: _read_list(lists / f"{s}.txt", problems) for s in LIST_SPLITS if (lists / f"{s}.txt").is_file()}
        if not listed and not (folder / AUG_MASKS).is_dir():
            raise DataError("Pascal VOC: no train.txt or val.txt here (the split lists)", lists)
        masks = ("SegmentationClass", AUG_MASKS)
        splits: dict[str, list[Pair]] = {}
        for split, names in listed.items():
            quiet = split == "test"
            found = [_pair(folder, n, masks, lists / f"{split}.txt", None if quiet else problems) for n in names]
            splits[split] = [p for p in found if p is not None]
            if quiet and len(splits[split]) < len(names):
                notices.append(f"test.txt: {len(names) - len(splits[split])} of {len(names)} images have no mask "
                               "(VOC's test labels are not public): left out")
        if (folder / AUG_MASKS).is_dir():
            names, source = _aug_names(folder, problems)
            val = set(listed.get("val", ()))
            taken = val | set(listed.get("train", ())) | set(listed.get("test", ()))
            in_val = sum(n in val for n in names)
            extra = [p for n in names if n not in taken
                     and (p := _pair(folder, n, (AUG_MASKS,), folder / source, problems)) is not None]
            splits.setdefault("train", []).extend(extra)
            notices.append(f"augmented set (SBD, from {source}): {len(extra)} extra train pairs"
                           + (f"; {in_val} of its images are in val.txt and stay val only" if in_val else ""))
        aug_used = any(p.mask.parent.name == AUG_MASKS for pairs in splits.values() for p in pairs)
        return FormatData(splits={s: p for s, p in splits.items() if p}, base=folder, classes=voc_classes(),
                          encoding="index" if aug_used else "palette", notices=notices)


register_format(VOC())
