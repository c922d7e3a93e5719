"""Training augmentation settings (plain data: importing this does not load TensorFlow)."""

from __future__ import annotations

from dataclasses import dataclass

from segcli.errors import DataError


@dataclass
class Augment:
    scale: tuple[float, float] = (1.0, 1.0)  # random scale factor range
    short_side: tuple[int, int] | None = None  # random short-side range in pixels (instead of scale), e.g. (400, 600)
    crop: tuple[int, int] | None = None  # (H, W) random crop, padded where the image is smaller
    center_crop: bool = False  # crop the centre instead of a random window
    flip: bool = True  # random horizontal flip

    def __post_init__(self):
        lo, hi = self.scale = tuple(float(s) for s in self.scale)
        if not 0 < lo <= hi:
            raise DataError(f"augment scale must be 0 < min <= max, got {self.scale}")
        if self.short_side is not None:
            lo, hi = self.short_side = tuple(int(s) for s in self.short_side)
            if not 0 < lo <= hi:
                raise DataError(f"augment short_side must be 0 < min <= max, got {self.short_side}")
        if self.crop is not None:
            self.crop = tuple(int(s) for s in self.crop)
            if len(self.crop) != 2 or min(self.crop) <= 0:
                raise DataError(f"augment crop must be (height, width) > 0, got {self.crop}")
