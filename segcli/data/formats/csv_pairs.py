"""A CSV file of image,mask[,split] rows (paths relative to the file; a header row is optional), given itself or
as the one .csv file of a folder."""

from __future__ import annotations

import csv
from pathlib import Path

from segcli.data.formats.base import SPLITS, FormatData, Pair, Problem
from segcli.data.formats.registry import register_format
from segcli.data.imageio import IMAGE_EXTS
from segcli.errors import DataError


def read_csv(path: Path, problems: list[Problem]) -> dict[str, list[Pair]]:
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


class CsvPairs:
    name = "csv"
    description = "a CSV file of image,mask[,split] rows (paths relative to it), or a folder holding one"

    def detect(self, root: Path) -> bool:
        if root.is_file():
            return root.suffix.lower() == ".csv"
        return root.is_dir() and any(root.glob("*.csv"))

    def read(self, root: Path, problems: list[Problem]) -> FormatData:
        if root.is_file():
            return FormatData(read_csv(root, problems), root.parent)
        csvs = sorted(root.glob("*.csv"))
        if len(csvs) > 1:
            raise DataError(f"{len(csvs)} CSV files found ({', '.join(c.name for c in csvs)}): pass the one to use",
                            root)
        return FormatData(read_csv(csvs[0], problems), root)

    def hint(self, root: Path) -> str | None:
        return None


register_format(CsvPairs(), generic=True)
