"""Rebuild sample_data/: a small, downscaled slice of CamVid for tests, demos and quick runs.

    python scripts/make_sample_data.py [--camvid ../shared/data/camvid] [--out sample_data]

Takes evenly spaced pairs (30 train, 10 val) in name order, resizes them to 240x180 (images with
INTER_AREA, label masks with INTER_NEAREST so no label is invented) and writes them in CamVid's
split-folders layout with the CamVid classes.json. README.md is kept as it is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2

from segcli.data.classes import camvid_classes

ROOT = Path(__file__).resolve().parents[1]
SIZE = (240, 180)  # (width, height) for cv2
COUNTS = {"train": 30, "val": 10}


def evenly_spaced(items: list, n: int) -> list:
    return [items[round(i * (len(items) - 1) / max(n - 1, 1))] for i in range(n)] if len(items) > n else items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camvid", type=Path, default=ROOT.parent / "shared" / "data" / "camvid")
    parser.add_argument("--out", type=Path, default=ROOT / "sample_data")
    args = parser.parse_args()
    for split, n in COUNTS.items():
        for folder in (split, f"{split}annot"):
            (args.out / folder).mkdir(parents=True, exist_ok=True)
            for old in (args.out / folder).glob("*.png"):
                old.unlink()
        for image_path in evenly_spaced(sorted((args.camvid / split).glob("*.png")), n):
            mask_path = args.camvid / f"{split}annot" / image_path.name
            image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
            mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
            if image is None or mask is None:
                raise SystemExit(f"cannot read {image_path} or {mask_path}")
            cv2.imwrite(str(args.out / split / image_path.name), cv2.resize(image, SIZE, interpolation=cv2.INTER_AREA),
                        [cv2.IMWRITE_PNG_COMPRESSION, 9])
            cv2.imwrite(str(args.out / f"{split}annot" / image_path.name),
                        cv2.resize(mask, SIZE, interpolation=cv2.INTER_NEAREST), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    camvid_classes().save(args.out / "classes.json")
    print(f"wrote {sum(COUNTS.values())} pairs to {args.out}")


if __name__ == "__main__":
    main()
