"""`data check`: read every image and mask once, count what is there, list every problem by file."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segcli.data.headers import check_pixels
from segcli.data.imageio import (ORIENTATIONS, exif_orientation, frames, is_jpeg, read_image_noted,
                                 read_label_png, read_png_palette)
from segcli.data.layout import Dataset, Pair, Problem
from segcli.data.masks import (PALETTE_BY_COLOUR, decode_labels, io_threads, load_labels, palette_disagreement,
                               palette_notice)
from segcli.errors import DataError


@dataclass
class CheckReport:
    root: str
    layout: str
    encoding: str
    classes_source: str
    class_names: list[str]
    ignore_index: int
    ignore_name: str
    notices: list[str]  # how the data was read and what to know before training; `train` shows them too
    counts: dict[str, int]  # pairs per split
    sizes: dict[str, int]  # "HxW" of the images -> how many
    pixel_share: list[float]  # per class, over all readable masks
    void_share: float
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "root": self.root,
            "layout": self.layout,
            "encoding": self.encoding,
            "classes_source": self.classes_source,
            "notices": self.notices,
            "counts": self.counts,
            "sizes": self.sizes,
            "classes": [{"index": i, "name": n, "pixel_share": s}
                        for i, (n, s) in enumerate(zip(self.class_names, self.pixel_share))],
            "void": {"index": self.ignore_index, "name": self.ignore_name, "pixel_share": self.void_share},
            "problems": [{"path": str(p.path), "problem": p.problem} for p in self.problems],
            "seconds": round(self.seconds, 3),
        }


@dataclass
class _PairResult:
    size: tuple[int, int] | None = None  # image HxW
    counts: np.ndarray | None = None  # label counts
    problems: list[Problem] = field(default_factory=list)
    conversion: str | None = None  # how a non-8-bit image was read
    oriented: list[tuple[Path, int]] = field(default_factory=list)  # files with an EXIF orientation
    multiframe: list[tuple[Path, str, int]] = field(default_factory=list)  # (file, kind, frames): frame 1 is read
    palette: str | None = None  # the notice when the mask's palette disagrees with the classes file's colours


def _orientation(path: Path) -> int:
    try:
        return exif_orientation(path)
    except OSError:
        return 1  # unreadable: reported by the reader


def _size_problem(pair: Pair, mask_hw, image_hw, orientation: int) -> str:
    text = (f"mask is {mask_hw[0]}x{mask_hw[1]} but its image {pair.image.name} is {image_hw[0]}x{image_hw[1]}")
    if orientation != 1:
        text += (f" as stored; the image's EXIF orientation ({ORIENTATIONS[orientation]}) is ignored, as for "
                 "masks")
        if orientation >= 5 and tuple(mask_hw) == tuple(image_hw[::-1]):
            text += (": the mask matches the rotated view, so rotate the image's pixels to match (e.g. "
                     "mogrify -auto-orient) or save the mask as the image is stored")
    return text


def _check_pair(pair: Pair, dataset: Dataset, full: bool, bins: int) -> _PairResult:
    """Image size and conversion, label counts, problems and EXIF orientations for one pair."""
    result = _PairResult()
    files = (pair.image,) if pair.reader is not None else (pair.image, pair.mask)  # a reader's file: annotations
    orientations = {path: _orientation(path) if path.is_file() else 1 for path in files}
    result.oriented = [(path, o) for path, o in orientations.items() if o != 1]
    result.multiframe = [(path, *found) for path in files if path.is_file() and (found := frames(path)) is not None]
    image_orientation = orientations[pair.image]
    if full:
        try:
            check_pixels(pair.image)  # from the header: a file too large is refused, never decoded
            image, result.conversion = read_image_noted(pair.image)
            result.size = image.shape[:2]
        except DataError as exc:
            result.problems.append(Problem(pair.image, exc.problem))
    if pair.reader is not None:  # annotations the format rasterises: its labels, at the image's size
        try:
            labels = load_labels(pair, dataset.encoding, dataset.classes, dataset.label_mapping, result.size)
            result.counts = np.bincount(labels.ravel(), minlength=bins)[:bins]
        except DataError as exc:
            result.problems.append(Problem(exc.path or pair.mask, exc.problem))
        return result
    try:
        raw = read_label_png(pair.mask)  # (checks the mask's pixels against the bound from its header)
    except DataError as exc:
        result.problems.append(Problem(pair.mask, exc.problem))
        return result
    if result.size is not None and raw.shape[:2] != result.size:
        result.problems.append(Problem(pair.mask, _size_problem(pair, raw.shape[:2], result.size, image_orientation)))
    jpeg = is_jpeg(pair.mask)
    if jpeg:
        result.problems.append(Problem(pair.mask, "mask saved as JPEG: JPEG compression is lossy and changes "
                                                  "label values (new classes, noise at edges); save masks as PNG"))
    if dataset.encoding in ("palette", PALETTE_BY_COLOUR) and raw.ndim == 2 and not dataset.label_mapping:
        try:
            mixed = palette_disagreement(raw, read_png_palette(pair.mask), dataset.classes)
        except OSError:
            mixed = []
        if mixed:
            result.palette = palette_notice(pair.mask, mixed, dataset.classes,
                                            dataset.encoding == PALETTE_BY_COLOUR)
    try:
        labels = decode_labels(raw, dataset.encoding, dataset.classes, dataset.label_mapping, path=pair.mask)
        result.counts = np.bincount(labels.ravel(), minlength=bins)[:bins]
    except DataError as exc:
        if not jpeg:  # a JPEG mask's stray values are the JPEG problem already named
            result.problems.append(Problem(pair.mask, exc.problem))
    return result


def _names(paths, limit: int = 5) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _notices(results: list[_PairResult]) -> list[str]:
    """What data check says about how the files were read: EXIF orientations ignored, the frame used of each
    multi-frame file (one line each), non-8-bit images."""
    notices = []
    oriented = [(path, o) for r in results for path, o in r.oriented]
    if oriented:
        notices.append(f"{len(oriented)} file(s) carry an EXIF orientation, ignored: pixels are used as stored "
                       "(as annotation tools label them), images and masks alike: "
                       + _names([f"{path.name} ({ORIENTATIONS[o]})" for path, o in oriented]))
    notices += [f"{path.name}: {kind} with {count} frames: frame 1 of {count} is used (as predict does); save the "
                "frame you mean as a single-frame image to use another"
                for r in results for path, kind, count in r.multiframe]
    notices += [r.palette for r in results if r.palette]
    conversions = Counter(r.conversion for r in results if r.conversion)
    if conversions:
        notices.append("images that are not 8-bit, scaled to 0..255: "
                       + ", ".join(f"{how} x{n}" for how, n in conversions.most_common()))
        if sum(how.startswith("16-bit") for how in conversions) > 1:
            notices.append("16-bit images hold different value ranges, and each is scaled by its own: the same "
                           "value may come out brighter in one than in another; convert them to 8-bit yourself "
                           "if they share one range")
    return notices


def _class_warnings(dataset: Dataset, split_counts: dict[str, np.ndarray]) -> tuple[list[str], list[Problem]]:
    """Notices on classes that val/test have but train lacks; a problem when train holds one class or none."""
    names, k = dataset.classes.names, dataset.classes.num_classes
    notices: list[str] = []
    problems: list[Problem] = []
    train = split_counts.get("train")
    if train is None:
        return notices, problems
    present = np.flatnonzero(train[:k])
    if len(present) <= 1 and train.sum() > 0:
        held = f"only one class ({names[present[0]]})" if len(present) else f"no class pixels (all {dataset.classes.ignore_name})"
        if dataset.label_mapping and not len(present):
            held += ": the label_mapping sends every value they hold to ignore"
        problems.append(Problem(dataset.root, f"the train masks hold {held}: a model trained on them learns "
                                              "nothing (it would predict that everywhere and score 100%); masks "
                                              "need at least two classes"))
    for split, counts in split_counts.items():
        lacking = [names[i] for i in range(k) if counts[i] and not train[i]]
        if split != "train" and lacking:
            notices.append(f"{split} has classes that train lacks: {_names(lacking, 8)} (the model never sees "
                           f"them in training, so their {split} IoU stays 0)")
    return notices, problems


def check_dataset(dataset: Dataset, *, full: bool = True) -> CheckReport:
    """Read every mask (and with `full`, every image) in a thread pool; gather counts and problems.

    A file whose header declares more pixels than headers.max_pixels() is a problem, never decoded (so memory
    stays bounded whatever the files hold; `train`, which checks its data first, refuses it too).

    full=False skips decoding the images: no image sizes, unreadable-image or size-mismatch checks.
    Notices (how files were read, classes missing from train) are in `notices`; a train split whose
    masks hold fewer than two classes is a problem, so `train` refuses it.
    """
    start = time.perf_counter()
    classes = dataset.classes
    k, ignore = classes.num_classes, classes.ignore_index
    bins = max(k, ignore + 1)
    split_of = [split for split, pairs in dataset.splits.items() for _ in pairs]
    with ThreadPoolExecutor(io_threads()) as pool:
        results = list(pool.map(lambda p: _check_pair(p, dataset, full, bins), dataset.pairs))
    sizes: Counter[str] = Counter()
    split_counts = {split: np.zeros(bins, np.int64) for split in dataset.splits}
    problems = list(dataset.problems)
    for split, result in zip(split_of, results):
        if result.size is not None:
            sizes[f"{result.size[0]}x{result.size[1]}"] += 1
        if result.counts is not None:
            split_counts[split] += result.counts
        problems += result.problems
    totals = sum(split_counts.values(), np.zeros(bins, np.int64))
    class_notices, class_problems = _class_warnings(dataset, split_counts)
    problems += class_problems
    pixels = max(int(totals[:k].sum() + totals[ignore]), 1)
    return CheckReport(
        root=str(dataset.root), layout=dataset.layout, encoding=dataset.encoding,
        classes_source=dataset.classes_source, class_names=list(classes.names),
        ignore_index=ignore, ignore_name=classes.ignore_name,
        notices=list(dataset.notices) + _notices(results) + class_notices,
        counts={s: len(p) for s, p in dataset.splits.items()}, sizes=dict(sizes.most_common()),
        pixel_share=[float(c) / pixels for c in totals[:k]], void_share=float(totals[ignore]) / pixels,
        problems=sorted(problems, key=lambda p: str(p.path)), seconds=time.perf_counter() - start,
    )
