"""Exported models against the .keras on CamVid val: label agreement, val mIoU and images/s per engine.

    .venv/bin/python benchmarks/engines_agreement.py [MODEL.keras] [--data ../shared/data/camvid] [--split val]
        [--json docs/results/engines-agreement.json] [--time-images 20] [--repeats 3] [--workdir DIR]
        [--timing-only] [--int8 N]

MODEL (default models/camvid-fcn.keras) is exported to ONNX, OpenVINO IR, TFLite and SavedModel (segcli.export,
each checked against Keras as `segcli export` does) into a temporary folder (or --workdir). Then every engine
installed (segcli.inference.engines) runs the whole split as `segcli predict` does (full-size images padded to the
output stride, batches of 4):
- val mIoU: `segcli.evaluation.evaluate`, the library behind `segcli evaluate MODEL DATA` (void left out, the
  tutorial's figure skipped), one image per call;
- agreement: from the same pass (the labels evaluate scored), the share of all pixels whose label equals the
  float32 Keras model's, and the lowest share of one image;
- images/s: the first --time-images images of the split, decoded beforehand, through `iter_predictions` (batch 4,
  as predict), after one warm-up pass; the engines take turns pass by pass (a busy spell of a shared machine falls
  on all alike), the median of --repeats passes each. `--time-images 0` leaves the timing out, and
  `--timing-only` adds it to an earlier run's --json with the exports it kept in --workdir (to time at another
  priority: `nice -n 19` for the agreement, `nice -n 0` for the timing on a machine shared with trainings).
With nncf installed, the IR is also quantised to INT8 (`segcli.export.int8`: full bias correction) on --int8
images spread over the train split (default 300), as `segcli export --int8` does, and run as one more row.
Keras runs in float32 and in the precision `auto` picks on this CPU (mixed_bfloat16 where it has native bf16);
OpenVINO in f32 and, where the CPU has native bf16, in bf16 (`--precision auto`). The CPU, the versions and the
command go into the JSON (docs/results/NAME.json's table format, written into docs/deploy.md by
scripts/docs_tables.py). A measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from importlib.util import find_spec
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_MODEL = ROOT / "models" / "camvid-fcn.keras"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "camvid"
EXPORTS = (("onnx", "model.onnx"), ("openvino", "model.xml"), ("tflite", "model.tflite"),
           ("savedmodel", "model_savedmodel"))
INT8_FILE = "model-int8.xml"  # the IR quantised by NNCF (--int8 N calibration images of the train split)
BATCH = 4  # segcli predict's default --batch-size
COLUMNS = [
    {"key": "engine", "title": "engine", "format": "text"},
    {"key": "model_file", "title": "model file", "format": "code"},
    {"key": "precision", "title": "precision", "format": "text"},
    {"key": "agreement", "title": "labels = Keras float32", "format": "pct2"},
    {"key": "worst_image_agreement", "title": "worst image", "format": "pct2"},
    {"key": "miou", "title": "val mIoU", "format": "pct2"},
    {"key": "images_per_sec", "title": "images/s (median)", "format": "f1"},
    {"key": "images_per_sec_best", "title": "best pass", "format": "f1"},
    {"key": "speedup", "title": "median x Keras float32", "format": "x"},
]


def shown(path: Path) -> str:
    """`path` relative to the checkout where it lies inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def rows_to_run(workdir: Path, model: Path) -> list[tuple[str, Path, str | None, str]]:
    """(label, model path, engine, precision) for every engine installed."""
    from segcli.inference.engines import installed
    from segcli.precision import resolve_precision

    auto = resolve_precision("auto")[0]
    rows = [("Keras (TensorFlow)", model, None, "float32")]
    if auto != "float32":
        rows.append(("Keras (TensorFlow)", model, None, auto))
    files = dict((fmt, workdir / name) for fmt, name in EXPORTS)
    if installed("onnxruntime"):
        rows.append(("ONNX Runtime", files["onnx"], "onnxruntime", "float32"))
    if installed("openvino"):
        rows.append(("OpenVINO", files["openvino"], "openvino", "float32"))
        if auto == "mixed_bfloat16":
            rows.append(("OpenVINO", files["openvino"], "openvino", auto))
        if (workdir / INT8_FILE).exists():
            rows.append(("OpenVINO INT8 (NNCF)", workdir / INT8_FILE, "openvino", "float32"))
    if installed("tflite"):
        rows.append(("TFLite", files["tflite"], "tflite", "float32"))
    rows.append(("TensorFlow SavedModel", files["savedmodel"], "savedmodel", "float32"))
    return rows


def quantize(workdir: Path, data: Path, count: int, say) -> None:
    """The OpenVINO IR quantised to INT8 by NNCF, calibrated on `count` train images (spread over the split, as
    `segcli export --int8` picks them)."""
    from segcli.export.int8 import dataset_images, quantize_openvino
    from segcli.inference.engines import meta_path

    ir = workdir / "model.xml"
    if (workdir / INT8_FILE).exists() and (workdir / INT8_FILE).stat().st_mtime > ir.stat().st_mtime:
        say(f"kept INT8: {workdir / INT8_FILE}")
        return
    stride = json.loads(meta_path(ir, "openvino").read_text())["output_stride"]
    images = dataset_images(data, count)[0]
    start = time.perf_counter()
    quantize_openvino(ir, workdir / INT8_FILE, images, stride)
    meta_path(workdir / INT8_FILE, "openvino").write_text(meta_path(ir, "openvino").read_text())
    say(f"quantised to INT8 on {len(images)} train images in {time.perf_counter() - start:.0f} s")


def export_all(model: Path, workdir: Path, say) -> None:
    from segcli.export import export_model
    from segcli.export.guards import missing_format_packages

    from segcli.inference.engines import meta_path

    for fmt, name in EXPORTS:
        if missing_format_packages(fmt)[0]:
            say(f"skip {fmt}: its packages are not installed")
            continue
        if meta_path(workdir / name, fmt).is_file() and meta_path(workdir / name, fmt).stat().st_mtime > \
                model.stat().st_mtime:
            say(f"kept {fmt}: {workdir / name}")  # --workdir: an earlier run's export of this model
            continue
        result = export_model(model, fmt, workdir / name, force=True)
        say(f"exported {fmt}: max abs diff vs Keras {result.max_abs_diff:.2e}")


class Recorder:
    """A model (Keras or an engine) that keeps the labels of every call: `evaluate` runs it with batch size 1, so
    call i is image i, padded to the output stride (cropped back to the image's size by `labels`)."""

    def __init__(self, model):
        self.model, self.outputs = model, []
        self.output_shape = model.output_shape

    def run_batch(self, batch):
        from segcli.inference.arrays import forward

        logits = forward(self.model, batch)
        self.outputs.extend(logits.argmax(axis=-1).astype(np.uint8))
        return logits

    def labels(self, sizes) -> list[np.ndarray]:
        assert len(self.outputs) == len(sizes), "one call per image (no tiles)"
        return [out[:h, :w] for out, (h, w) in zip(self.outputs, sizes)]


def labels_of(loaded, images) -> list[np.ndarray]:
    from segcli.inference import iter_predictions

    return [labels for _, _, labels, _ in iter_predictions(loaded.model, enumerate(images),
                                                           stride=loaded.output_stride, batch_size=BATCH)]


def time_engines(loaded: list, images, repeats: int, say) -> list[tuple[float, float]]:
    """(median, best) images/s of each of `loaded` on `images`: the engines take turns, pass by pass, so a busy
    spell of the machine falls on all of them alike."""
    for model in loaded:
        labels_of(model, images[:BATCH])  # warm-up: compilation, allocation
    seconds = [[] for _ in loaded]
    for i in range(repeats):
        for j, model in enumerate(loaded):
            start = time.perf_counter()
            labels_of(model, images)
            seconds[j].append(time.perf_counter() - start)
        say(f"timing pass {i + 1}/{repeats} done")
    return [(len(images) / statistics.median(s), len(images) / min(s)) for s in seconds]


def add_timing(result: dict, model: Path, data: Path, split: str, workdir: Path, time_images: int, repeats: int,
               say) -> dict:
    """images/s of every row of `result` (as `measure` made it, its exports in `workdir`), in turns."""
    from segcli.data import open_dataset, read_image
    from segcli.inference.engines import load_predictor

    images = [read_image(p.image) for p in open_dataset(data).splits[split][:time_images]]
    runs = [(label, path, engine, precision) for label, path, engine, precision in rows_to_run(workdir, model)
            if path.exists()]
    loaded = [load_predictor(path, precision, engine) for _, path, engine, precision in runs]
    rates = time_engines(loaded, images, repeats, say)
    for row, (median, best) in zip(result["rows"], rates):
        row["images_per_sec"], row["images_per_sec_best"] = median, best
    result["columns"] = COLUMNS
    base = result["rows"][0]["images_per_sec"]
    for row in result["rows"]:
        row["speedup"] = row["images_per_sec"] / base
    result["note"] = result["note"].split(". images/s:")[0]  # an earlier run's timing is replaced
    result["note"] += (f". images/s: the first {len(images)} images (decoded beforehand), batches of {BATCH} as "
                       f"segcli predict, the engines taking turns, median of {repeats} passes each")
    return result


def measure(model: Path, data: Path, split: str, workdir: Path, int8: int, say) -> dict:
    from segcli.data import open_dataset, read_image
    from segcli.evaluation import evaluate
    from segcli.inference.engines import load_predictor
    from segcli.system import cpu_line

    export_all(model, workdir, say)
    if int8 and (workdir / "model.xml").exists() and find_spec("nncf") is not None:
        quantize(workdir, data, int8, say)
    pairs = open_dataset(data).splits[split]
    sizes = [read_image(p.image).shape[:2] for p in pairs]
    reference = None
    rows = []
    for label, path, engine, precision in rows_to_run(workdir, model):
        if not path.exists():
            continue
        loaded = load_predictor(path, precision, engine)
        say(f"{label} {precision}: {len(sizes)} images")
        loaded.model = recorder = Recorder(loaded.model)  # one pass: the scores and the labels
        scores = evaluate(loaded, data, split, tutorial=False, batch_size=1)
        labels = recorder.labels(sizes)
        if reference is None:
            reference = labels
        same = [np.mean(a == b) for a, b in zip(reference, labels)]
        pixels = sum(a.size for a in labels)
        agreement = sum(float(np.sum(a == b)) for a, b in zip(reference, labels)) / pixels
        rows.append({"engine": label, "model_file": path.name if engine else model.name, "precision": precision,
                     "runtime": loaded.meta.get("runtime", "keras"), "agreement": agreement,
                     "worst_image_agreement": float(min(same)), "miou": scores["miou"],
                     "pixel_accuracy": scores["pixel_accuracy"]})
        say(f"  agreement {100 * agreement:.3f}%, mIoU {100 * scores['miou']:.2f}%")
        del loaded
    size = f"{sizes[0][0]}x{sizes[0][1]}"
    return {
        "cpu": cpu_line(),
        "precision": "as each row says (exports are float32; OpenVINO's bf16 is its inference precision hint)",
        "date": date.today().isoformat(),
        "command": f"python benchmarks/engines_agreement.py {shown(model)} --json docs/results/engines-agreement.json "
                   "(mIoU as segcli evaluate MODEL ../shared/data/camvid --engine E --precision P gives it)",
        "note": (f"CamVid {split}, {len(sizes)} images at {size} (padded to the output stride), void left out. "
                 f"Agreement: pixels whose label equals the float32 .keras model's, over all pixels of the split"),
        "columns": COLUMNS,
        "rows": rows,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", default="val")
    parser.add_argument("--json", type=Path, default=None, help="write the table here")
    parser.add_argument("--time-images", type=int, default=20, help="0: no timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--int8", type=int, default=300, metavar="N",
                        help="also quantise the OpenVINO IR to INT8 with NNCF on N train images (0: not)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the exports here")
    parser.add_argument("--timing-only", action="store_true",
                        help="only add images/s to the rows of the --json file, with the exports of --workdir "
                             "(the timing can run at another priority than the agreement)")
    args = parser.parse_args(argv)
    if args.timing_only and not (args.json and args.workdir):
        parser.error("--timing-only needs --json (the rows to time) and --workdir (their exports)")

    from segcli.backend import import_quietly

    import_quietly()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="segcli-engines-"))
    workdir.mkdir(parents=True, exist_ok=True)
    say = lambda message: print(message, flush=True)  # noqa: E731
    try:
        if args.timing_only:
            result = json.loads(args.json.read_text())
        else:
            result = measure(args.model.resolve(), args.data, args.split, workdir, args.int8, say)
        if args.time_images > 0:
            result = add_timing(result, args.model.resolve(), args.data, args.split, workdir, args.time_images,
                                args.repeats, say)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    text = json.dumps(result, indent=2) + "\n"
    if args.json:
        from segcli.files import write_text

        write_text(args.json, text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
