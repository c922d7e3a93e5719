"""Where predict's time goes per engine: the forward pass alone against segcli's whole predict path.

    .venv/bin/python benchmarks/engines_forward.py --workdir DIR [MODEL.keras] [--data ../shared/data/camvid]
        [--json docs/results/engines-forward.json]

DIR holds the exports `benchmarks/engines_agreement.py --workdir DIR` made of MODEL (model.xml, model-int8.xml).
Per engine and precision: images/s of `segcli.inference.arrays.forward` on one batch of 4 val images padded to
384x480 (median of 10 calls after 3 warm-ups), and of `iter_predictions` (segcli predict's path: padding, the
forward pass, argmax, cropping back) on the first 20 val images in batches of 4 (median of 3 passes). The
difference is the cost per image that every engine pays alike. A measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COLUMNS = [{"key": "engine", "title": "engine", "format": "text"},
           {"key": "precision", "title": "precision", "format": "text"},
           {"key": "forward", "title": "forward only, images/s", "format": "f1"},
           {"key": "forward_ms", "title": "ms/image", "format": "f1"},
           {"key": "path", "title": "predict path, images/s", "format": "f1"},
           {"key": "path_ms", "title": "ms/image", "format": "f1"}]


def median_seconds(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", type=Path, default=ROOT / "models" / "camvid-fcn.keras")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "camvid")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from segcli.backend import import_quietly

    import_quietly()
    from engines_agreement import BATCH, labels_of, rows_to_run
    from segcli.data import open_dataset, read_image
    from segcli.inference.arrays import forward
    from segcli.inference.engines import load_predictor
    from segcli.system import cpu_line

    images = [read_image(p.image) for p in open_dataset(args.data).splits["val"][:20]]
    batch = np.stack([np.pad(im, ((0, 384 - im.shape[0]), (0, 480 - im.shape[1]), (0, 0)), mode="reflect")
                      for im in images[:BATCH]]).astype(np.float32)
    rows = []
    for label, path, engine, precision in rows_to_run(args.workdir, args.model):
        if engine not in (None, "openvino") or not path.exists():  # Keras and OpenVINO (bf16, INT8) only
            continue
        loaded = load_predictor(path, precision, engine)
        for _ in range(3):
            forward(loaded.model, batch)
        fwd = median_seconds(lambda: forward(loaded.model, batch), 10) / len(batch)
        labels_of(loaded, images[:BATCH])  # warm-up
        path_s = median_seconds(lambda: labels_of(loaded, images), 3) / len(images)
        rows.append({"engine": label, "precision": precision, "forward": 1 / fwd, "forward_ms": 1000 * fwd,
                     "path": 1 / path_s, "path_ms": 1000 * path_s})
        print(f"{label} {precision}: forward {1 / fwd:.1f} images/s, predict path {1 / path_s:.1f}", flush=True)
    result = {"cpu": cpu_line(), "date": date.today().isoformat(),
              "command": "python benchmarks/engines_forward.py --workdir DIR (DIR: engines_agreement.py's exports)",
              "note": "CamVid val at 360x480 (padded to 384x480), batches of 4; nothing else running",
              "columns": COLUMNS, "rows": rows}
    if args.json:
        from segcli.files import write_text

        write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
