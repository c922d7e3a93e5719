"""Peak memory and time of `predict_files` on one very large image (tiled prediction).

    .venv/bin/python benchmarks/bench_tiled_predict.py [--size 8000] [--tile 1024] [--overlap 128]
        [--batch-size 4] [--classes 12] [--model unet] [--probabilities] [--overlay]

The `tiled` section of `segcli bench` with more knobs: a SIZE x SIZE PNG of gradients and noise
(segcli.bench.write_big_image, cached under the temp folder) predicted by a small U-Net (depth 4, base
width 8, random weights) in a child process (segcli.bench's child runner), which reports its peak resident
memory (segcli.system.peak_rss_mb, TensorFlow's own ~0.5-1 GiB included) before and after predicting and
the seconds predict_files took. A measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segcli.bench import run_in_child, write_big_image  # noqa: E402
from segcli.errors import SegcliError  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8000)
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument("--model", default="unet", help="a registered model")
    parser.add_argument("--options", default='{"depth": 4, "base_filters": 8}', help="the builder's options, JSON")
    parser.add_argument("--probabilities", action="store_true")
    parser.add_argument("--overlay", action="store_true")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "segcli-bench")
    args = parser.parse_args(argv)

    args.work.mkdir(parents=True, exist_ok=True)
    image = args.work / f"big_{args.size}.png"
    if not image.is_file():
        started = time.perf_counter()
        write_big_image(image, args.size)
        print(f"wrote {image} ({image.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - started:.0f} s")

    spec = {"model": args.model, "options": json.loads(args.options), "classes": args.classes, "image": str(image),
            "out": str(args.work / "out"), "tile": args.tile, "overlap": args.overlap, "batch": args.batch_size,
            "probabilities": args.probabilities, "overlay": args.overlay}
    try:
        r = run_in_child("segcli.bench.measurements:tiled_child", spec, what="tiled predict")
    except SegcliError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"predicted {args.size}x{args.size} with {args.model} {spec['options']}, {args.classes} classes -> "
          f"{args.work / 'out'}/ (tile {args.tile}, overlap {args.overlap}, batch {args.batch_size}"
          f"{', probabilities' if args.probabilities else ''}{', overlay' if args.overlay else ''})")
    print(f"seconds: {r['seconds']:.1f}  ({r['megapixels_per_sec']:.2f} Mpx/s)")
    print(f"peak RSS: {r['peak_rss_mib']:.0f} MiB (before predict {r['peak_rss_before_predict_mib']:.0f} MiB: "
          f"Python, TensorFlow and the model)")


if __name__ == "__main__":
    main()
