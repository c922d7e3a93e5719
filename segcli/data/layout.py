"""Opening a dataset: its format (segcli.data.formats), the splits, the classes and the encoding."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segcli.data.classes import ClassMap, load_classes
from segcli.data.formats import SPLITS, LAYOUT_HINT, Pair, Problem, find_format, match_pairs
from segcli.data.masks import BINARY_NOTICE, PALETTE_BY_COLOUR, check_mapping, detect_encoding, infer_classes
from segcli.errors import DataError

__all__ = ["SPLITS", "LAYOUT_HINT", "Dataset", "Pair", "Problem", "match_pairs", "open_dataset"]


@dataclass
class Dataset:
    root: Path
    layout: str  # the format's name: "split-folders", "images-masks", "csv", ... (segcli.data.formats)
    splits: dict[str, list[Pair]]  # keys among "train", "val", "test"
    classes: ClassMap
    encoding: str  # see segcli.data.masks.ENCODINGS
    classes_source: str  # "file:<path>" | "inferred" | "given" | "fallback" | "format"
    notices: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    label_mapping: dict[int, int] | None = None  # stored mask value -> training ID (segcli.data.masks.load_labels)

    @property
    def pairs(self) -> list[Pair]:
        return [p for split in self.splits.values() for p in split]


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
    fmt = find_format(root)
    found = fmt.read(root, problems)
    layout, base, notices = fmt.name, found.base, list(found.notices)
    splits = {s: found.splits[s] for s in SPLITS if found.splits.get(s)}
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
    elif found.classes is not None:
        classmap, source = found.classes, found.classes_source or "format"
    elif fallback_classes is not None:
        classmap, source = fallback_classes, "fallback"
    else:
        classmap, source = None, "inferred"

    mapping = found.label_mapping
    masks = [p.mask for pairs in splits.values() for p in pairs if p.reader is None]
    if found.encoding is not None:
        encoding = found.encoding
    elif not masks:  # every pair rasterised by its format's reader
        encoding = "index"
    else:
        encoding = detect_encoding(masks, None if mapping else classmap, notices=notices)
        if mapping and encoding == "binary":  # stored values are what the mapping says, 0/255 included
            encoding = "index"
    if classmap is None:
        if mapping:
            raise DataError("a label mapping needs the classes it maps to: pass --classes FILE or put "
                            "classes.json in the dataset folder", root)
        classmap, notice = infer_classes(masks, encoding)
        notices.append(notice)
    if encoding == "binary":
        notices.append(BINARY_NOTICE)
    if palette_by_colour and encoding == "palette":
        encoding = PALETTE_BY_COLOUR
    if mapping:
        if found.keep_unmapped:  # Ultralytics' rule: {11: ignore_label} leaves 0..10 as they are
            mapping = {**{value: value for value in range(classmap.num_classes)}, **mapping}
        check_mapping(mapping, classmap, encoding, root)
    return Dataset(root, layout, splits, classmap, encoding, source, notices, problems, mapping)
