"""`data check`: read every image and mask once, count what is there, list every problem by file."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from segcli.data.imageio import read_image, read_label_png
from segcli.data.layout import Dataset, Pair, Problem
from segcli.data.masks import io_threads, decode_mask
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
    notices: list[str]
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


def _check_pair(pair: Pair, dataset: Dataset, full: bool, bins: int):
    """(image HxW or None, label counts or None, problems) for one pair."""
    problems, size, counts = [], None, None
    if full:
        try:
            size = read_image(pair.image).shape[:2]
        except DataError as exc:
            problems.append(Problem(pair.image, exc.problem))
    try:
        raw = read_label_png(pair.mask)
    except DataError as exc:
        problems.append(Problem(pair.mask, exc.problem))
        return size, None, problems
    if size is not None and raw.shape[:2] != size:
        problems.append(Problem(pair.mask, f"mask is {raw.shape[0]}x{raw.shape[1]} but its image "
                                           f"{pair.image.name} is {size[0]}x{size[1]}"))
    try:
        labels = decode_mask(raw, dataset.encoding, dataset.classes, path=pair.mask)
        counts = np.bincount(labels.ravel(), minlength=bins)[:bins]
    except DataError as exc:
        problems.append(Problem(pair.mask, exc.problem))
    return size, counts, problems


def check_dataset(dataset: Dataset, *, full: bool = True) -> CheckReport:
    """Read every mask (and with `full`, every image) in a thread pool; gather counts and problems.

    full=False skips decoding the images: no image sizes, unreadable-image or size-mismatch checks.
    """
    start = time.perf_counter()
    classes = dataset.classes
    k, ignore = classes.num_classes, classes.ignore_index
    bins = max(k, ignore + 1)
    pairs = dataset.pairs
    with ThreadPoolExecutor(io_threads()) as pool:
        results = list(pool.map(lambda p: _check_pair(p, dataset, full, bins), pairs))
    sizes: Counter[str] = Counter()
    totals = np.zeros(bins, np.int64)
    problems = list(dataset.problems)
    for size, counts, found in results:
        if size is not None:
            sizes[f"{size[0]}x{size[1]}"] += 1
        if counts is not None:
            totals += counts
        problems += found
    pixels = max(int(totals[:k].sum() + totals[ignore]), 1)
    return CheckReport(
        root=str(dataset.root), layout=dataset.layout, encoding=dataset.encoding,
        classes_source=dataset.classes_source, class_names=list(classes.names),
        ignore_index=ignore, ignore_name=classes.ignore_name, notices=list(dataset.notices),
        counts={s: len(p) for s, p in dataset.splits.items()}, sizes=dict(sizes.most_common()),
        pixel_share=[float(c) / pixels for c in totals[:k]], void_share=float(totals[ignore]) / pixels,
        problems=sorted(problems, key=lambda p: str(p.path)), seconds=time.perf_counter() - start,
    )
