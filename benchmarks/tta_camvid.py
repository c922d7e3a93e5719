"""Gain and cost of test-time augmentation on CamVid val: mIoU, pixel accuracy and seconds per TTA setting.

    .venv/bin/python benchmarks/tta_camvid.py MODEL.keras [--data ../shared/data/camvid] [--split val]
        [--tta none --tta flip --tta flip,0.75,1.25] [--batch-size 4] [--precision auto] [--limit N]

Each setting runs `segcli.evaluation.evaluate` (the library behind `segcli evaluate --tta`, full-size images,
void left out; the tutorial's figure is skipped so the seconds are the scored pass alone). Before timing, one
batch of the first image runs through every setting, so compilation (a tf.function or jax.jit per input shape,
and each scale is a new shape) is not in the seconds. `--limit N` scores only the first N images of the split,
through a temporary folder of links under the temp folder (the dataset itself is never copied or changed).
The figures go to stdout as a table, and with `--json FILE` to FILE. A measurement, not a test: nothing is
asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segcli.errors import SegcliError  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "camvid"
DEFAULT_TTA = ["none", "flip", "flip,0.75,1.25"]


def limited_copy(data_dir: Path, split: str, limit: int, work: Path) -> Path:
    """A folder like data_dir whose `split` holds links to its first `limit` images and their masks; every other
    entry of data_dir (other splits, classes.json) is linked as it is."""
    from segcli.data import open_dataset

    pairs = open_dataset(data_dir).splits.get(split) or []
    if not pairs:
        raise SegcliError(f"no {split!r} split in this dataset", data_dir)
    pairs = pairs[:limit]
    image_dir, mask_dir = pairs[0].image.parent, pairs[0].mask.parent
    for entry in data_dir.iterdir():
        if entry.resolve() not in (image_dir.resolve(), mask_dir.resolve()):
            os.symlink(entry.resolve(), work / entry.name)
    for folder in {image_dir, mask_dir}:
        (work / folder.relative_to(data_dir)).mkdir(parents=True, exist_ok=True)
    for pair in pairs:
        for path in (pair.image, pair.mask):
            os.symlink(path.resolve(), work / path.relative_to(data_dir))
    return work


def warm_up(loaded, data_dir: Path, split: str, settings: list, batch_size: int) -> None:
    """One batch (the first image, batch_size times) through every setting: compiles each input shape once."""
    from segcli.data import open_dataset, read_image
    from segcli.inference import iter_predictions

    image = read_image(open_dataset(data_dir).splits[split][0].image)
    for tta in settings:
        for _ in iter_predictions(loaded.model, ((i, image) for i in range(batch_size)),
                                  stride=loaded.output_stride, batch_size=batch_size, tta=tta):
            pass


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a .keras model file written by `segcli train`")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"dataset folder (default {DEFAULT_DATA})")
    parser.add_argument("--split", default="val")
    parser.add_argument("--tta", action="append", help="a --tta setting (repeat the flag; 'none': no TTA); "
                        f"default: {' '.join(DEFAULT_TTA)}")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N images of the split")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    from segcli.evaluation import evaluate
    from segcli.inference import parse_tta
    from segcli.modelfile import load_model

    work = None
    try:
        settings = [parse_tta(spec) for spec in (args.tta or DEFAULT_TTA)]
        data_dir = args.data = args.data.resolve()
        if args.limit is not None:
            work = Path(tempfile.mkdtemp(prefix="tta_camvid_"))
            data_dir = limited_copy(args.data, args.split, max(1, args.limit), work)
        loaded = load_model(args.model, args.precision)
        warm_up(loaded, data_dir, args.split, settings, args.batch_size)
        rows = []
        for tta in settings:
            started = time.perf_counter()
            result = evaluate(loaded, data_dir, args.split, batch_size=args.batch_size, tutorial=False, tta=tta)
            seconds = time.perf_counter() - started
            rows.append({"tta": str(tta) if tta else "none", "passes": result["tta_passes"],
                         "miou": result["miou"], "pixel_accuracy": result["pixel_accuracy"], "seconds": seconds,
                         "images": result["images"]})
    except SegcliError as exc:
        raise SystemExit(f"error: {exc}") from None
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)

    base = rows[0]
    print(f"{args.model.name} on {args.data} ({args.split}, {base['images']} images, batch {args.batch_size}, "
          f"precision {loaded.precision})")
    print(f"{'tta':<20} {'passes':>6} {'mIoU':>7} {'pixel acc':>9} {'seconds':>8} {'x time':>6}")
    for r in rows:
        print(f"{r['tta']:<20} {r['passes']:>6} {100 * r['miou']:>6.2f}% {100 * r['pixel_accuracy']:>8.2f}% "
              f"{r['seconds']:>8.1f} {r['seconds'] / max(base['seconds'], 1e-9):>6.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps({"model": str(args.model), "data": str(args.data), "split": args.split,
                                         "batch_size": args.batch_size, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
