"""`segcli data convert SRC OUT`: any dataset segcli reads (every registered format, a dataset file, segcli's own
layouts) written as segcli's images + masks layout, so that rasterising annotations or mapping labels is paid
once:

    OUT/classes.json                 the dataset's classes (names, colours, ignore index)
    OUT/{train,val,test}/images/     the images, their files copied byte for byte
    OUT/{train,val,test}/masks/      NAME.png: 8-bit palette PNGs whose index is the training ID (the ignore
                                     index where ignored), coloured with the classes' colours

The splits are the source's own (no val is held out here: training the converted folder does that, as it would
the source). Every label is read as training reads it (masks.load_labels: a format's reader, its label
mapping), so the converted folder trains to the same labels.

OUT is written as a temporary folder beside it and renamed into place at the end: a failure leaves nothing.
An OUT that exists is refused unless it is empty, or a folder `data convert` made (it has segcli's marker) and
`force` is given; an OUT among the source's files, or holding them, is refused before any work.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from segcli.data.classes import ClassMap
from segcli.data.formats.datasetfile import data_folders
from segcli.data.layout import Dataset, open_dataset
from segcli.data.masks import load_labels
from segcli.errors import DataError, SegcliError
from segcli.files import (atomic_path, check_replaceable, ensure_writable_dir, exists_or_link, guard_output,
                          mark_segcli_folder, move_aside, new_temp_dir, output_target, remove_stale_temporaries)
from segcli.progress import NullProgress, Progress

KIND = "convert"  # the marker kind of the folders it writes: only those may be replaced (--force)


@dataclass
class ConvertResult:
    out: Path
    source_layout: str  # the format the source was read as
    counts: dict[str, int]  # pairs written per split
    classes: ClassMap
    notices: list[str]
    seconds: float


def _data_folders(src: Path, dataset: Dataset) -> list[Path]:
    """What the output must keep out of: the source (a dataset file's root too) and the folders of its images and
    annotation files."""
    return [*data_folders(src), *sorted({f for p in dataset.pairs for f in (p.image.parent, p.mask.parent)})]


def _check_out(out: Path, data: list[Path], force: bool) -> None:
    """guard_output (OUT not among or inside the data), OUT not holding the data (--force would remove it), then
    check_replaceable (OUT missing, empty, or an earlier conversion with `force`)."""
    guard_output(out, data)
    target = output_target(out)
    for source in data:
        if target in output_target(source).parents:
            raise SegcliError(f"holds the data {source}: segcli does not write over its inputs; choose another "
                              "--out", out)
    check_replaceable(out, force, "output folder", kind=KIND)


def _unique_names(pairs) -> list[str]:
    """The stems the pairs' files take in OUT: the image's stem, with _2, _3, ... added where two images of a split
    share one (Cityscapes' cities, a COCO export's subfolders)."""
    taken: set[str] = set()
    names = []
    for pair in pairs:
        stem, n = pair.image.stem, 1
        while (stem if n == 1 else f"{stem}_{n}") in taken:
            n += 1
        names.append(stem if n == 1 else f"{stem}_{n}")
        taken.add(names[-1])
    return names


def _copy_file(source: Path, target: Path) -> None:
    with atomic_path(target, needed=source.stat().st_size) as tmp:
        shutil.copyfile(source, tmp)


def _write_split(tmp: Path, split: str, dataset: Dataset, palette, progress: Progress) -> int:
    from segcli.data.imageio import write_mask_png

    pairs = dataset.splits[split]
    task = f"convert {split}"
    progress.start(task, len(pairs))
    try:
        for done, (pair, name) in enumerate(zip(pairs, _unique_names(pairs)), start=1):
            labels = load_labels(pair, dataset.encoding, dataset.classes, dataset.label_mapping)
            _copy_file(pair.image, tmp / split / "images" / f"{name}{pair.image.suffix}")
            write_mask_png(tmp / split / "masks" / f"{name}.png", labels, palette)
            progress.advance(task, done, info=pair.image.name)
    finally:
        progress.end(task)
    return len(pairs)


def convert_dataset(src: str | Path, out: str | Path, *, classes: str | Path | None = None, force: bool = False,
                    palette_by_colour: bool = False, progress: Progress | None = None) -> ConvertResult:
    """Write the dataset at `src` (a folder of any registered format, a CSV or a dataset file) as segcli's
    images + masks layout in `out`; `classes` a classes file to read it with (as `train --classes`). A source
    with problems (unpaired files, unreadable annotations) is refused naming the first, as `train` refuses it."""
    progress = progress or NullProgress()
    started = time.perf_counter()
    src, out = Path(src), Path(out)
    dataset = open_dataset(src, classes=classes, val_fraction=0.0, palette_by_colour=palette_by_colour)
    _check_out(out, _data_folders(src, dataset), force)
    if dataset.problems:
        first = dataset.problems[0]
        raise DataError(f"{len(dataset.problems)} problem(s) in the dataset, first: {first.path}: {first.problem} "
                        f"(see `segcli data check {src}`)", src)
    if dataset.classes.ignore_index > 255:
        raise DataError(f"{dataset.classes.num_classes} classes with ignore index {dataset.classes.ignore_index} "
                        "do not fit 8-bit masks", src)
    for notice in dataset.notices:
        progress.note(notice)
    remove_stale_temporaries(out)
    ensure_writable_dir(out.parent)
    tmp = new_temp_dir(out)
    try:
        counts = {split: _write_split(tmp, split, dataset, dataset.classes.palette(), progress)
                  for split in dataset.splits}
        dataset.classes.save(tmp / "classes.json")
        mark_segcli_folder(tmp, KIND)
        old = move_aside(out) if exists_or_link(out) else None  # an empty folder, or (replace) an earlier conversion
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return ConvertResult(out, dataset.layout, counts, dataset.classes, list(dataset.notices),
                         time.perf_counter() - started)
