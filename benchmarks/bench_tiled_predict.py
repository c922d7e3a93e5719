"""Peak memory and time of `predict_files` on one very large image (tiled prediction).

    .venv/bin/python benchmarks/bench_tiled_predict.py [--size 8000] [--tile 1024] [--overlap 128]
        [--batch-size 4] [--classes 12] [--probabilities] [--overlay]

Builds a small U-Net (depth 4, base width 8, random weights), writes a random-ish SIZE x SIZE PNG (in a
child process, so the writer's memory does not count; cached under the temp folder), then predicts it
in this process and prints the peak resident memory (segcli.system.peak_rss_mb, which includes
TensorFlow's own ~0.5-1 GiB) before and after, and the seconds predict_files took.
A measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _write_image(path: str, size: int) -> None:
    """Smooth colour gradients plus noise and a few shapes: compresses like a photo, not like pure noise."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    yy = np.linspace(0, 1, size, dtype=np.float32)[:, None]
    xx = np.linspace(0, 1, size, dtype=np.float32)[None, :]
    bgr = np.empty((size, size, 3), np.uint8)
    for c, (a, b) in enumerate(((90, 120), (160, -60), (40, 180))):
        channel = a + b * (0.5 + 0.5 * np.sin(6.0 * xx + 3.0 * c) * np.cos(5.0 * yy - c))
        bgr[..., c] = np.clip(channel + rng.normal(0, 12, (size, size)).astype(np.float32), 0, 255)
    for _ in range(60):
        center = tuple(int(v) for v in rng.integers(0, size, 2))
        color = tuple(int(v) for v in rng.integers(0, 255, 3))
        cv2.circle(bgr, center, int(rng.integers(size // 80, size // 12)), color, -1)
    tmp = path + ".tmp.png"
    if not cv2.imwrite(tmp, bgr):
        raise SystemExit(f"cannot write {tmp}")
    os.replace(tmp, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8000)
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument("--probabilities", action="store_true")
    parser.add_argument("--overlay", action="store_true")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "segcli-bench")
    args = parser.parse_args(argv)

    args.work.mkdir(parents=True, exist_ok=True)
    image = args.work / f"big_{args.size}.png"
    if not image.is_file():
        started = time.perf_counter()
        child = mp.get_context("spawn").Process(target=_write_image, args=(str(image), args.size))
        child.start()
        child.join()
        if child.exitcode:
            raise SystemExit(f"writing the test image failed (exit {child.exitcode})")
        print(f"wrote {image} ({image.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - started:.0f} s")

    import keras

    from segcli.data import default_classes
    from segcli.inference import predict_files
    from segcli.modelfile import LoadedModel
    from segcli.models import build_model, count_params, output_stride
    from segcli.system import peak_rss_mb

    keras.utils.set_random_seed(0)
    model = build_model("unet", args.classes, depth=4, base_filters=8)
    loaded = LoadedModel(model, default_classes(args.classes), output_stride(model))
    print(f"model: unet depth 4, base 8, {args.classes} classes, {count_params(model):,} params, "
          f"stride {loaded.output_stride}")
    before = peak_rss_mb()
    print(f"before predict: peak RSS {before:.0f} MiB, current {current_rss_mib():.0f} MiB (TensorFlow + model)")

    started = time.perf_counter()
    records = predict_files(loaded, [image], args.work / "out", tile=args.tile, overlap=args.overlap,
                            batch_size=args.batch_size, probabilities=args.probabilities, overlay=args.overlay)
    seconds = time.perf_counter() - started
    rec = records[0]
    print(f"predicted {rec.height}x{rec.width} -> {rec.mask} (tile {args.tile}, overlap {args.overlap}, "
          f"batch {args.batch_size}{', probabilities' if args.probabilities else ''}"
          f"{', overlay' if args.overlay else ''})")
    print(f"seconds: {seconds:.1f}  ({rec.height * rec.width / seconds / 1e6:.2f} Mpx/s)")
    print(f"peak RSS: {peak_rss_mb():.0f} MiB (before predict {before:.0f} MiB)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
