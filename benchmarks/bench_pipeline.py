"""Input-pipeline throughput on CamVid: 368x480 random crops, batch 16, scale + flip augmentation.

    python benchmarks/bench_pipeline.py [--data ../shared/data/camvid] [--batches 40] [--no-cache]

Prints images/s after one warm-up epoch (which fills the in-memory cache).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from segcli.bench import DEFAULT_DATA  # noqa: E402
from segcli.data import Augment, open_dataset, pipeline_throughput  # noqa: E402
from segcli.recipe import RECIPES_DIR  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--classes", type=Path, default=RECIPES_DIR / "camvid-classes.json")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--no-cache", action="store_true", help="decode from disk every epoch")
    args = parser.parse_args()

    dataset = open_dataset(args.data, classes=args.classes)
    train = dataset.splits["train"]
    augment = Augment(scale=(0.75, 1.5), crop=(368, 480), flip=True)
    start = time.perf_counter()
    rate = pipeline_throughput(train, dataset.classes, dataset.encoding, batch_size=args.batch_size,
                               batches=args.batches, augment=augment, cache=not args.no_cache)
    print(f"{len(train)} train pairs, batch {args.batch_size}, 368x480 crops, scale 0.75-1.5 + flip, "
          f"cache {'off' if args.no_cache else 'on'}, {os.cpu_count()} CPUs: {rate:.0f} images/s "
          f"({time.perf_counter() - start:.1f} s in all)")


if __name__ == "__main__":
    main()
