"""segcli's CamVid-style layout: DIR/train + DIR/trainannot (also val/valannot, test/testannot)."""

from __future__ import annotations

from pathlib import Path

from segcli.data.formats.base import SPLITS, FormatData, Problem, match_pairs
from segcli.data.formats.registry import register_format


def _folders(root: Path) -> dict[str, tuple[Path, Path]]:
    return {s: (root / s, root / f"{s}annot") for s in SPLITS}


class SplitFolders:
    name = "split-folders"
    description = "DIR/train + DIR/trainannot (also val/valannot, test/testannot): images and masks paired by name"

    def detect(self, root: Path) -> bool:
        return root.is_dir() and any(i.is_dir() and m.is_dir() for i, m in _folders(root).values())

    def read(self, root: Path, problems: list[Problem]) -> FormatData:
        folders = _folders(root)
        problems += [Problem(i, f"{i.name}/ has no {m.name}/ beside it: its images are not used")
                     for i, m in folders.values() if i.is_dir() and not m.is_dir()]
        return FormatData({s: match_pairs(i, m, problems) for s, (i, m) in folders.items()
                           if i.is_dir() and m.is_dir()}, root)

    def hint(self, root: Path) -> str | None:
        return None


register_format(SplitFolders(), generic=True)
