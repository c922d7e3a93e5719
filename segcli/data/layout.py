"""Finding image/mask pairs on disk: the dataset layouts, the splits, the classes and the encoding."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segcli.data.classes import ClassMap, load_classes
from segcli.data.imageio import IMAGE_EXTS
from segcli.data.masks import BINARY_NOTICE, PALETTE_BY_COLOUR, detect_encoding, infer_classes
from segcli.errors import DataError

SPLITS = ("train", "val", "test")
LAYOUT_HINT = ("expected DIR/train + DIR/trainannot (also val/valannot, test/testannot), "
               "DIR/images + DIR/masks (or DIR/train/images + DIR/train/masks, ...), "
               "or a CSV file of image,mask rows")


@dataclass
class Pair:
    image: Path
    mask: Path


@dataclass
class Problem:
    path: Path
    problem: str


@dataclass
class Dataset:
    root: Path
    layout: str  # "split-folders" | "images-masks" | "csv"
    splits: dict[str, list[Pair]]  # keys among "train", "val", "test"
    classes: ClassMap
    encoding: str  # see segcli.data.masks.ENCODINGS
    classes_source: str  # "file:<path>" | "inferred" | "given" | "fallback"
    notices: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def pairs(self) -> list[Pair]:
        return [p for split in self.splits.values() for p in split]


def _files_by_stem(folder: Path, problems: list[Problem]) -> dict[str, Path]:
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
    images, masks = _files_by_stem(image_dir, problems), _files_by_stem(mask_dir, problems)
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


def _read_csv(path: Path, problems: list[Problem]) -> dict[str, list[Pair]]:
    """Rows image,mask[,split] relative to the CSV file; a header row is optional."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read CSV ({exc})", path) from None
    if rows and Path(rows[0][0].strip()).suffix.lower() not in IMAGE_EXTS:
        rows = rows[1:]  # header
    splits: dict[str, list[Pair]] = {}
    for n, row in enumerate(rows, start=1):
        if len(row) < 2:
            problems.append(Problem(path, f"row {n}: expected image,mask"))
            continue
        image, mask = (path.parent / row[0].strip()), (path.parent / row[1].strip())
        split = row[2].strip().lower() if len(row) > 2 and row[2].strip() else "train"
        if split not in SPLITS:
            problems.append(Problem(path, f"row {n}: split {split!r} is not one of {', '.join(SPLITS)}"))
        elif not image.is_file():
            problems.append(Problem(image, "image listed in the CSV does not exist"))
        elif not mask.is_file():
            problems.append(Problem(mask, "mask listed in the CSV does not exist"))
        else:
            splits.setdefault(split, []).append(Pair(image, mask))
    return splits


def _find_layout(root: Path, problems: list[Problem]) -> tuple[str, dict[str, list[Pair]], Path]:
    """(layout, pairs per split, folder holding classes.json)."""
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DataError(f"not a dataset folder or a .csv file; {LAYOUT_HINT}", root)
        return "csv", _read_csv(root, problems), root.parent
    folders = {s: (root / s, root / f"{s}annot") for s in SPLITS}
    if any(i.is_dir() and m.is_dir() for i, m in folders.values()):
        layout = "split-folders"
        problems += [Problem(i, f"{i.name}/ has no {m.name}/ beside it: its images are not used")
                     for i, m in folders.values() if i.is_dir() and not m.is_dir()]
    elif (root / "images").is_dir() and (root / "masks").is_dir():
        return "images-masks", {"train": match_pairs(root / "images", root / "masks", problems)}, root
    else:
        folders = {s: (root / s / "images", root / s / "masks") for s in SPLITS}
        layout = "images-masks"
    splits = {s: match_pairs(i, m, problems) for s, (i, m) in folders.items() if i.is_dir() and m.is_dir()}
    if splits:
        return layout, splits, root
    csvs = sorted(root.glob("*.csv"))
    if len(csvs) == 1:
        return "csv", _read_csv(csvs[0], problems), root
    if len(csvs) > 1:
        raise DataError(f"{len(csvs)} CSV files found ({', '.join(c.name for c in csvs)}): pass the one to use", root)
    raise DataError(f"no dataset layout recognised; {LAYOUT_HINT}", root)


def _hold_out(train: list[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, val): a seeded, sorted-then-shuffled `fraction` of train (at least 1) becomes val."""
    ordered = sorted(train, key=lambda p: str(p.image))
    n_val = min(len(ordered) - 1, max(1, round(len(ordered) * fraction)))
    chosen = set(np.random.default_rng(seed).permutation(len(ordered))[:n_val].tolist())
    return ([p for i, p in enumerate(ordered) if i not in chosen], [p for i, p in enumerate(ordered) if i in chosen])


def open_dataset(root: str | Path, classes: str | Path | ClassMap | None = None,
                 val_fraction: float = 0.1, seed: int = 0, fallback_classes: ClassMap | None = None,
                 palette_by_colour: bool = False) -> Dataset:
    """Find the layout, pair images with masks, split off val when missing, settle classes and encoding.

    Classes: `classes` (a file or a ClassMap), else the data's classes.json, else `fallback_classes` (source
    "fallback": a model's own record of its training data's classes), else inferred from the mask values.

    palette_by_colour: palette masks map their palette entries to classes by colour (encoding
    "palette-by-colour"), not by index; every reader of the masks follows dataset.encoding.

    Unpaired files become `problems`; a missing root, an unknown layout or no pairs at all raise DataError.
    """
    root = Path(root)
    if not root.exists():
        raise DataError("no such file or directory", root)
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val fraction must be in [0, 1), got {val_fraction}")
    problems: list[Problem] = []
    notices: list[str] = []
    layout, splits, base = _find_layout(root, problems)
    splits = {s: splits[s] for s in SPLITS if splits.get(s)}
    if not splits:
        raise DataError(f"no image/mask pairs found ({len(problems)} unpaired files); "
                        "masks must share the image's name (or add _mask)", root)

    train = splits.get("train", [])
    if "val" not in splits and val_fraction > 0 and len(train) >= 2:
        splits["train"], splits["val"] = _hold_out(train, val_fraction, seed)
        splits = {s: splits[s] for s in SPLITS if s in splits}
        notices.append(f"no val split: {len(splits['val'])} of {len(train)} train pairs held out as val "
                       f"(val fraction {val_fraction:g}, seed {seed})")

    if isinstance(classes, ClassMap):
        classmap, source = classes, "given"
    elif classes is not None:
        classmap, source = load_classes(classes), f"file:{classes}"
    elif (base / "classes.json").is_file():
        classmap, source = load_classes(base / "classes.json"), f"file:{base / 'classes.json'}"
    elif fallback_classes is not None:
        classmap, source = fallback_classes, "fallback"
    else:
        classmap, source = None, "inferred"

    masks = [p.mask for pairs in splits.values() for p in pairs]
    encoding = detect_encoding(masks, classmap, notices=notices)
    if classmap is None:
        classmap, notice = infer_classes(masks, encoding)
        notices.append(notice)
    if encoding == "binary":
        notices.append(BINARY_NOTICE)
    if palette_by_colour and encoding == "palette":
        encoding = PALETTE_BY_COLOUR
    return Dataset(root, layout, splits, classmap, encoding, source, notices, problems)
