"""The registry of dataset formats: `register_format` (each format module calls it at import), `list_formats`,
`get_format` and `find_format` (the first format, in priority order, that recognises a folder).

Priority: formats registered as `generic` (segcli's own folder layouts, which match many trees) are tried after
all the others, so a benchmark's specific layout wins; within each group, the order of registration."""

from __future__ import annotations

from pathlib import Path

from segcli.data.formats.base import DatasetFormat
from segcli.errors import DataError

LAYOUT_HINT = ("expected DIR/train + DIR/trainannot (also val/valannot, test/testannot), "
               "DIR/images + DIR/masks (or DIR/train/images + DIR/train/masks, ...), "
               "a CSV file of image,mask rows, or a dataset file (.yaml, .yml, .toml)")

_FORMATS: dict[str, DatasetFormat] = {}
_GENERIC: set[str] = set()


def register_format(fmt: DatasetFormat, *, generic: bool = False) -> DatasetFormat:
    """Add `fmt` (a DatasetFormat) under fmt.name; generic: tried after the specific formats. Returns fmt."""
    for attribute in ("name", "description", "detect", "read", "hint"):
        if not hasattr(fmt, attribute):
            raise TypeError(f"dataset format {fmt!r} has no {attribute!r}")
    if fmt.name in _FORMATS:
        raise ValueError(f"dataset format {fmt.name!r} is registered already")
    _FORMATS[fmt.name] = fmt
    if generic:
        _GENERIC.add(fmt.name)
    return fmt


def _ordered() -> list[DatasetFormat]:
    return ([f for name, f in _FORMATS.items() if name not in _GENERIC]
            + [f for name, f in _FORMATS.items() if name in _GENERIC])


def list_formats() -> list[str]:
    """The registered formats' names, in the order find_format tries them."""
    return [f.name for f in _ordered()]


def get_format(name: str) -> DatasetFormat:
    if name not in _FORMATS:
        raise DataError(f"unknown dataset format {name!r}; known formats: {', '.join(list_formats())}")
    return _FORMATS[name]


def find_format(root: Path) -> DatasetFormat:
    """The first format, in priority order, whose detect(root) is true. None: DataError with every format's hint
    for `root` (a format it almost is), else the generic layout hint."""
    root = Path(root)
    formats = _ordered()
    for fmt in formats:
        if fmt.detect(root):
            return fmt
    hints = [hint for fmt in formats if (hint := fmt.hint(root))]
    if root.is_file():
        raise DataError(f"not a dataset folder, a .csv file or a dataset file; {'; '.join(hints) or LAYOUT_HINT}",
                        root)
    raise DataError(f"no dataset layout recognised; {'; '.join(hints) or LAYOUT_HINT}", root)
