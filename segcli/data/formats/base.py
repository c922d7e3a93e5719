"""What a dataset format is and what it gives: `Pair` (an image and its mask file, or a reader that rasterises
annotations), `FormatData` (a format's splits, classes, encoding, label mapping), the `DatasetFormat` protocol,
and `match_pairs`, pairing two folders of files by name (the layouts of segcli and of most benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from segcli.data.classes import ClassMap
from segcli.data.imageio import IMAGE_EXTS

SPLITS = ("train", "val", "test")


@dataclass
class Pair:
    """An image and its labels. `mask` is the mask file, or the annotation file that `reader` rasterises (every
    message names it). reader((height, width)) -> int32 labels (H, W), already training IDs, ignored pixels the
    classes' ignore_index; picklable (a small dataclass with __call__, or functools.partial of a module-level
    function). None: the mask file is decoded (segcli.data.masks.load_labels)."""

    image: Path
    mask: Path
    reader: Callable[[tuple[int, int]], np.ndarray] | None = None


@dataclass
class Problem:
    path: Path
    problem: str


@dataclass
class FormatData:
    """What a format's `read` finds: pairs per split (keys among SPLITS; empty splits left out), the folder where a
    classes.json is looked for, the format's own classes (used unless the user gives a classes file), a fixed mask
    encoding (None: detected from the files), a label mapping (stored value -> training ID, applied to decoded
    file masks before the range check; a value not in it, or mapped to no class, becomes the ignore index, but
    with keep_unmapped a class ID not in it stays itself) and notices (how the data was read)."""

    splits: dict[str, list[Pair]]
    base: Path
    classes: ClassMap | None = None
    encoding: str | None = None
    label_mapping: dict[int, int] | None = None
    notices: list[str] = field(default_factory=list)
    classes_source: str | None = None  # where `classes` come from, as Dataset.classes_source says it ("file:<path>");
    # None: "format"
    keep_unmapped: bool = False  # a class ID the label mapping does not list is itself (Ultralytics' rule for its
    # dataset YAMLs), not ignored


@runtime_checkable
class DatasetFormat(Protocol):
    name: str  # "voc", "cityscapes", ..., "split-folders"
    description: str  # one line: what it reads (README's Data section)

    def detect(self, root: Path) -> bool:
        """Cheap: looks at names, reads no image."""

    def read(self, root: Path, problems: list[Problem]) -> FormatData:
        """The pairs; a Problem(path, text) per bad file, DataError when nothing can be read."""

    def hint(self, root: Path) -> str | None:
        """When `root` is almost this format (a Cityscapes tree without gtFine): one line saying what is missing."""


def files_by_stem(folder: Path, problems: list[Problem]) -> dict[str, Path]:
    """The image files of `folder` (IMAGE_EXTS, hidden files left out) by stem; a second file of a stem is a
    problem and left out."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTS and not path.name.startswith("."):
            if path.stem in found:
                problems.append(Problem(path, f"same name as {found[path.stem].name}: ignored"))
            else:
                found[path.stem] = path
    return found


def match_pairs(image_dir: Path, mask_dir: Path, problems: list[Problem]) -> list[Pair]:
    """Pair images with masks by file stem (the mask may add `_mask` or use another extension)."""
    images, masks = files_by_stem(image_dir, problems), files_by_stem(mask_dir, problems)
    pairs, used = [], set()
    for stem, image in images.items():
        mask_stem = stem if stem in masks else f"{stem}_mask" if f"{stem}_mask" in masks else None
        if mask_stem is None:
            problems.append(Problem(image, f"image without mask (nothing named {stem}.* in {mask_dir.name}/)"))
        else:
            used.add(mask_stem)
            pairs.append(Pair(image, masks[mask_stem]))
    for stem, mask in masks.items():
        if stem not in used:
            problems.append(Problem(mask, f"mask without image (nothing named {stem}.* in {image_dir.name}/)"))
    return pairs
