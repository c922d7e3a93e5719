"""segcli's images + masks layout: DIR/images + DIR/masks, or one such pair of folders per split
(DIR/train/images + DIR/train/masks, ...)."""

from __future__ import annotations

from pathlib import Path

from segcli.data.formats.base import SPLITS, FormatData, Problem, match_pairs
from segcli.data.formats.registry import register_format


def _per_split(root: Path) -> dict[str, tuple[Path, Path]]:
    folders = {s: (root / s / "images", root / s / "masks") for s in SPLITS}
    return {s: (i, m) for s, (i, m) in folders.items() if i.is_dir() and m.is_dir()}


class ImagesMasks:
    name = "images-masks"
    description = ("DIR/images + DIR/masks, or DIR/train/images + DIR/train/masks (also val, test): images and "
                   "masks paired by name (a mask may add _mask)")

    def detect(self, root: Path) -> bool:
        return root.is_dir() and (((root / "images").is_dir() and (root / "masks").is_dir()) or bool(_per_split(root)))

    def read(self, root: Path, problems: list[Problem]) -> FormatData:
        if (root / "images").is_dir() and (root / "masks").is_dir():
            return FormatData({"train": match_pairs(root / "images", root / "masks", problems)}, root)
        return FormatData({s: match_pairs(i, m, problems) for s, (i, m) in _per_split(root).items()}, root)

    def hint(self, root: Path) -> str | None:
        return None


register_format(ImagesMasks(), generic=True)
