"""A peer on the same CPU: Ultralytics' YOLO26n-sem beside a segcli recipe on CamVid, both scored by segcli's scorer.

    nice -n 19 PEERS_VENV/bin/python benchmarks/peers/ultralytics_camvid.py --minutes 30 \
        [--segcli-recipe camvid-fcn-balanced [--segcli-epochs 58]] [--data ../shared/data/camvid] [--limit N] \
        [--imgsz 480] [--batch 8] [--seed 0] [--work DIR] [--json FILE] [--ultralytics-run EARLIER_WORK/ultralytics]

What it does, in order:
1. Writes the dataset YAML that `yolo semantic train` reads into a scratch folder of its own (`--work`, default a
   new folder under the temp folder; never inside the dataset or this repo): `images/{train,val}` and
   `masks/{train,val}` hold links to CamVid's `train/` + `trainannot/` and `val/` + `valannot/` PNGs (the first
   `--limit N` pairs of each split with `--limit`), `masks_dir: masks`, `names` the 11 CamVid classes and
   `label_mapping: {11: ignore_label}`, so void (label 11) becomes Ultralytics' ignore label 255.
2. Trains YOLO26n-sem from scratch through Ultralytics' Python API, the same as
   `yolo semantic train model=yolo26n-sem.yaml data=DATA.yaml pretrained=False time=HOURS amp=False ...`
   (`time=` is in hours: `--minutes / 60`, Ultralytics' own clock, per-epoch validation included, checked after
   every optimizer step; `amp=False`: float32; device cpu; plots off; imgsz 480 and batch 8 as in issue 31's
   trial; Ultralytics trains on a CPU with 0 data-loader workers, whatever `workers=` says), with Ultralytics'
   settings and runs inside the scratch folder (YOLO_CONFIG_DIR, project=; YOLO_OFFLINE=1: it looks nothing
   up on the network). With `--ultralytics-run DIR` (an earlier call's WORK/ultralytics) it trains none: it
   re-validates that run's best.pt and scores it as below, so that only the segcli run is redone.
3. With `--segcli-recipe NAME`: trains that segcli recipe for the same budget on the same pairs, one after
   the other on the same CPU, as a child process of segcli's own venv (`--segcli-python`, default
   .venv/bin/python of this repo): `python -m segcli train fcn DATA --recipe NAME --max-minutes M
   --precision float32 --out WORK/segcli-run` (`--segcli-epochs N` adds `--epochs N`, so that a recipe's
   schedule spans the budget; `fcn` is only the positional argument: the recipe's [model] name wins).
4. Scores both tools' best checkpoints (each picked on val by its own tool: best.pt, best.keras) and their last
   epochs' (last.pt, model.keras: no epoch picked on val) on the val split at CamVid's native 360x480 with
   segcli's scorer (segcli.scoring: confusion matrix over the 11 classes, void left out, mIoU over the classes
   that occur): Ultralytics' model predicts each val image
   (imgsz = the training imgsz, letterboxed and scaled back by Ultralytics to the image's size; a label map of
   another size is resized, nearest) and its argmax label map is scored against the mask read by segcli
   (segcli.data.load_labels); segcli's models through `python -m segcli evaluate RUN/best.keras DATA --split
   val --json --precision float32` (and RUN/model.keras), the command a user runs.
5. Prints a table (tool, epochs done, train minutes, val mIoU and pixel accuracy by segcli's scorer of the best
   checkpoint, val mIoU of the last epoch, Ultralytics' own val mIoU) and with `--json FILE` writes it with the
   CPU (model name, cores, avx512_bf16 / amx_bf16), the versions and the commands, as a docs/results table
   (`--json docs/results/peers-camvid-30min.json`, then `python scripts/docs_tables.py`).

A measurement, not a test: nothing is asserted. Run it niced when other work shares the CPU.

Installing the peer (docs/peers.md has the details): Ultralytics is a benchmark dependency only; segcli never
imports it. It goes in a venv of its own, not in segcli's:

    nice -n 19 python3.11 -m venv /work/peers-venv
    nice -n 19 /work/peers-venv/bin/pip install "torch==2.14.1" "torchvision==0.29.1" "ultralytics==8.4.190"

That is PyPI's matching torch + torchvision pair (CUDA builds, about 6 GB with the nvidia-* wheels they pull
in; they run on a CPU-only machine, torch.cuda.is_available() is False). Where the PyTorch CPU index
(https://download.pytorch.org/whl/cpu) is reachable, its matching CPU pair is the lighter route:
`pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu`, then `pip install
ultralytics`. What does not work: torch 2.13.0+cpu (segcli's venv) with PyPI's torchvision 0.28.0, even with
--no-deps: its _C.so links libtorch_cuda.so and libc10_cuda.so, which the CPU build does not have, so its ops
do not load, and `import torchvision` then fails at once ("RuntimeError: operator torchvision::nms does not
exist", an unguarded register_fake in torchvision/_meta_registrations.py); Ultralytics' validator imports
torchvision unconditionally, so the semantic task cannot run without an importable torchvision.

This script runs in the peer's venv: it imports Ultralytics inside main (`--help` works without it), and from
segcli only NumPy-level modules (segcli.scoring, segcli.data, segcli.system, segcli.files), which the peer's
venv has the packages for (numpy, opencv, pyyaml, psutil come with Ultralytics).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "camvid"
SPLIT_FOLDERS = {"train": ("train", "trainannot"), "val": ("val", "valannot")}  # CamVid's layout
YOLO_MODEL = "yolo26n-sem.yaml"
INSTALL_HINT = ('Ultralytics is not installed in this Python. Install it in a venv of its own (docs/peers.md):\n'
                '  nice -n 19 python3.11 -m venv /work/peers-venv\n'
                '  nice -n 19 /work/peers-venv/bin/pip install "torch==2.14.1" "torchvision==0.29.1" '
                '"ultralytics==8.4.190"\n'
                'and run this script with /work/peers-venv/bin/python.')


def camvid_classes_file() -> Path:
    """The classes file the CamVid recipes name (11 classes, void = 11), shipped with segcli."""
    return ROOT / "segcli" / "resources" / "recipes" / "camvid-classes.json"


def check_work_folder(work: Path, data: Path) -> None:
    for outer, what in ((ROOT, "this repository"), (data.resolve(), "the dataset")):
        if work.resolve() == outer or outer in work.resolve().parents:
            raise SystemExit(f"error: --work {work} is inside {what}; give a scratch folder elsewhere")
    if work.exists() and (not work.is_dir() or any(work.iterdir())):
        raise SystemExit(f"error: --work {work} exists and is not an empty folder; give a new one")


def camvid_dataset(data: Path, limit: int | None):
    """segcli's view of the CamVid folder (11 classes, void = 11) and {split: its first `limit` pairs}."""
    from segcli.data import open_dataset

    dataset = open_dataset(data, classes=camvid_classes_file())
    pairs = {}
    for split in SPLIT_FOLDERS:
        found = dataset.splits.get(split) or []
        if not found:
            raise SystemExit(f"error: no {split!r} split in {data}")
        pairs[split] = found[:limit]
    return dataset, pairs


def link_pairs(pairs: dict, root: Path, folders) -> None:
    """Links to each split's images and masks in the two folders under root that folders(split) names."""
    for split, split_pairs in pairs.items():
        image_dir, mask_dir = (root / f for f in folders(split))
        image_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        for pair in split_pairs:
            os.symlink(pair.image.resolve(), image_dir / pair.image.name)
            os.symlink(pair.mask.resolve(), mask_dir / f"{pair.image.stem}.png")  # Ultralytics: image stem + .png


def write_ultralytics_dataset(classes, pairs: dict, root: Path) -> Path:
    """root/images/{train,val} + root/masks/{train,val} (links) and root/camvid.yaml, Ultralytics' dataset YAML."""
    import yaml

    link_pairs(pairs, root, lambda split: (f"images/{split}", f"masks/{split}"))
    spec = {
        "path": str(root),
        "train": "images/train",
        "val": "images/val",
        "masks_dir": "masks",
        "names": dict(enumerate(classes.names)),
        "label_mapping": {classes.ignore_index: "ignore_label"},  # void (11) -> Ultralytics' ignore label 255
    }
    path = root / "camvid.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def train_ultralytics(data_yaml: Path, work: Path, args) -> dict:
    """YOLO26n-sem from scratch for args.minutes of Ultralytics' own timed training; its run folder, epochs,
    minutes and own val scores (the final validation of best.pt)."""
    from ultralytics import YOLO

    overrides = {"data": str(data_yaml), "pretrained": False, "time": args.minutes / 60, "imgsz": args.imgsz,
                 "batch": args.batch, "amp": False, "device": "cpu", "seed": args.seed, "plots": False,
                 "project": str(work), "name": "ultralytics", "exist_ok": False}
    command = f"yolo semantic train model={YOLO_MODEL} " + " ".join(f"{k}={v}" for k, v in overrides.items())
    model = YOLO(YOLO_MODEL, task="semantic")
    started = time.perf_counter()
    model.train(**overrides)
    wall = time.perf_counter() - started
    trainer = model.trainer
    rows = trainer.read_results_csv()
    own = {key: float(value) for key, value in (trainer.metrics or {}).items()
           if key in ("metrics/mIoU", "metrics/pixel_acc")}
    return {"run": str(trainer.save_dir), "weights": str(trainer.best), "last_weights": str(trainer.last),
            "command": command,
            "epochs": len(rows.get("epoch", [])),
            "train_seconds": float(rows["time"][-1]) if rows.get("time") else None,  # its own clock, as time= counts
            "wall_seconds": wall, "own_val_miou": own.get("metrics/mIoU"),
            "own_val_pixel_accuracy": own.get("metrics/pixel_acc")}


def reuse_ultralytics(run: Path, work: Path) -> dict:
    """An Ultralytics run this script trained before (--ultralytics-run: its weights/ and results.csv), as
    train_ultralytics returns one: epochs and its own training clock from results.csv, its own val scores from
    a fresh validation of best.pt on the dataset its args.yaml names. The command's wall time is not known."""
    import csv

    import yaml
    from ultralytics import YOLO

    rows = list(csv.DictReader((run / "results.csv").open()))
    trained = yaml.safe_load((run / "args.yaml").read_text())
    best, last = run / "weights" / "best.pt", run / "weights" / "last.pt"
    for path in (best, last):
        if not path.is_file():
            raise SystemExit(f"error: --ultralytics-run {run}: no {path.relative_to(run)}")
    own = YOLO(str(best), task="semantic").val(data=trained["data"], imgsz=trained["imgsz"],
                                               batch=trained["batch"], device="cpu", plots=False,
                                               project=str(work), name="ultralytics-val").results_dict
    command = f"yolo semantic train model={YOLO_MODEL} " + " ".join(
        f"{k}={trained[k]}" for k in ("data", "pretrained", "time", "imgsz", "batch", "amp", "device", "seed"))
    return {"run": str(run), "weights": str(best), "last_weights": str(last), "command": command, "reused": True,
            "epochs": len(rows), "train_seconds": float(rows[-1]["time"].strip()) if rows else None,
            "wall_seconds": None, "own_val_miou": own.get("metrics/mIoU"),
            "own_val_pixel_accuracy": own.get("metrics/pixel_acc")}


def score_ultralytics(weights: Path, dataset, pairs: list, imgsz: int) -> dict:
    """segcli's scores (segcli.scoring, void left out) of an Ultralytics semantic model's argmax label maps on
    `pairs`, at the images' own size."""
    import cv2
    import numpy as np
    from ultralytics import YOLO

    from segcli.data import load_labels
    from segcli.scoring import confusion_counts, scores_from_confusion

    k, ignore = dataset.classes.num_classes, dataset.classes.ignore_index
    model = YOLO(str(weights), task="semantic")
    cm = np.zeros((k, k), np.int64)
    started = time.perf_counter()
    for pair in pairs:
        result = model.predict(str(pair.image), imgsz=imgsz, device="cpu", verbose=False)[0]
        pred = result.semantic_mask.data.cpu().numpy().astype(np.uint8)
        truth = load_labels(pair, dataset.encoding, dataset.classes, dataset.label_mapping)
        if pred.shape != truth.shape:
            pred = cv2.resize(pred, truth.shape[::-1], interpolation=cv2.INTER_NEAREST)
        cm += confusion_counts(truth, pred, k, ignore)
    scores = scores_from_confusion(cm, k)
    return {"miou": scores["miou"], "pixel_accuracy": scores["pixel_accuracy"],
            "iou": dict(zip(dataset.classes.names, scores["iou"])), "images": len(pairs),
            "pixels": scores["pixels"], "seconds": time.perf_counter() - started}


def run_segcli(python: str, argv: list, capture: bool = False) -> subprocess.CompletedProcess:
    command = [python, "-m", "segcli", *argv]
    print("$", " ".join(command), flush=True)
    done = subprocess.run(command, cwd=ROOT, text=True, stdout=subprocess.PIPE if capture else None)
    if done.returncode:
        raise SystemExit(f"error: segcli {argv[0]} exited with {done.returncode}")
    return done


def train_and_score_segcli(data: Path, work: Path, args) -> dict:
    """The segcli recipe for the same budget, then `segcli evaluate` of its best.keras on val."""
    run = work / "segcli-run"
    train = ["train", "fcn", str(data), "--recipe", args.segcli_recipe, "--max-minutes", f"{args.minutes:g}",
             "--precision", "float32", "--out", str(run)]
    if args.segcli_epochs is not None:
        train += ["--epochs", str(args.segcli_epochs)]
    started = time.perf_counter()
    run_segcli(args.segcli_python, train)
    wall = time.perf_counter() - started
    scored = {}
    for model in ("best.keras", "model.keras"):  # the epoch picked on val, and the last epoch
        evaluate = ["evaluate", str(run / model), str(data), "--split", "val", "--json", "--precision", "float32",
                    "--classes", str(camvid_classes_file())]
        result = json.loads(run_segcli(args.segcli_python, evaluate, capture=True).stdout)
        scored[model] = {"miou": result["miou"], "pixel_accuracy": result["pixel_accuracy"],
                         "images": result["images"], "iou": {row["name"]: row["iou"] for row in result["per_class"]},
                         "command": " ".join(["segcli", *evaluate])}
    metrics = json.loads((run / "metrics.json").read_text())
    backend = json.loads((run / "run.json").read_text()).get("backend")
    return {"recipe": args.segcli_recipe, "run": str(run), "weights": str(run / "best.keras"),
            "commands": [" ".join(["segcli", *train])] + [scored[m].pop("command") for m in scored],
            "epochs": metrics.get("epochs"), "epochs_planned": metrics.get("epochs_planned"),
            "train_seconds": metrics.get("train_seconds"), "wall_seconds": wall, "backend": backend,
            "val": scored["best.keras"], "val_last": scored["model.keras"]}


def machine() -> dict:
    from segcli.system import cpu_flags, cpu_name

    flags = cpu_flags()
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "bf16": sorted(flags & {"amx_bf16", "avx512_bf16"}),
            "platform": platform.platform(), "python": platform.python_version()}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("ultralytics", "torch", "torchvision", "numpy", "opencv-python"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def git_commit() -> str | None:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, text=True, capture_output=True)
    return done.stdout.strip() or None


COLUMNS = [  # the table docs/peers.md shows (scripts/docs_tables.py renders it from the --json file)
    {"key": "tool", "title": "tool", "format": "text"},
    {"key": "epochs", "title": "epochs", "format": "int"},
    {"key": "train_minutes", "title": "training", "format": "min"},
    {"key": "wall_minutes", "title": "training command", "format": "min"},
    {"key": "miou", "title": "val mIoU, best epoch", "format": "pct"},
    {"key": "miou_last", "title": "val mIoU, last epoch", "format": "pct"},
    {"key": "pixel_accuracy", "title": "pixel acc., best epoch", "format": "pct"},
    {"key": "own_miou", "title": "Ultralytics' own val mIoU", "format": "pct"},
]


def table_keys(result: dict) -> dict:
    """The keys of a docs/results table (scripts/docs_tables.py) for a result this script wrote: columns, rows
    in minutes, CPU line, precision, date, command and the protocol as a note."""
    from segcli.system import cpu_line

    rows = [{**row, **{f"{clock}_minutes": None if row[f"{clock}_seconds"] is None else row[f"{clock}_seconds"] / 60
                       for clock in ("train", "wall")}} for row in result["rows"]]
    return {
        "cpu": result.get("cpu") or cpu_line(), "precision": "float32 (both tools)",
        "date": result.get("date") or date.today().isoformat(), "command": result["command"],
        "note": (f"CamVid val, {result['val_images']} images at 360x480, void left out, scored by segcli's scorer "
                 f"(segcli.scoring); {result['train_images']} train images. One run of each tool, one after the "
                 f"other, {result['minutes']:g} minutes each. Best epoch: the checkpoint each tool picks on val "
                 "(best.pt, best.keras); last epoch: none picked (last.pt, model.keras). Training: Ultralytics' own "
                 "clock (time=, its per-epoch validation included) and segcli's training time (validation left "
                 "out; its --max-minutes budget counts validation, as time= does); training command: the wall "
                 "time of the whole command, set-up and final validation included"),
        "columns": COLUMNS, "rows": rows,
    }


def minutes(seconds) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f}"


def print_table(rows: list) -> None:
    from segcli.scoring import pct

    header = (f"{'tool':<34} {'epochs':>6} {'train min':>9} {'wall min':>8} {'val mIoU':>9} {'pixel acc':>9} "
              f"{'last ep.':>9} {'own mIoU':>9}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['tool']:<34} {r['epochs'] if r['epochs'] is not None else '-':>6} {minutes(r['train_seconds']):>9} "
              f"{minutes(r['wall_seconds']):>8} {pct(r['miou']):>9} {pct(r['pixel_accuracy']):>9} "
              f"{pct(r['miou_last']):>9} {pct(r.get('own_miou')):>9}")
    print("val mIoU, pixel acc: segcli's scorer (segcli.scoring), val split at 360x480, void left out, each tool's "
          "best checkpoint; last ep.: val mIoU of the last epoch's model (none picked on val); own mIoU: "
          "Ultralytics' validator on best.pt; train min: each tool's own training clock; wall min: its whole "
          "training command")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Install Ultralytics in a venv of its own: see docs/peers.md.")
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-clock training budget of each tool")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"CamVid folder (default {DEFAULT_DATA})")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first N train and N val pairs (a smoke run)")
    parser.add_argument("--imgsz", type=int, default=480, help="Ultralytics' imgsz, in training and prediction")
    parser.add_argument("--batch", type=int, default=8, help="Ultralytics' batch size")
    parser.add_argument("--seed", type=int, default=0, help="Ultralytics' seed")
    parser.add_argument("--ultralytics-run", type=Path, default=None, metavar="DIR",
                        help="score this Ultralytics run of an earlier call (WORK/ultralytics) instead of training "
                             "one: for a segcli run to redo beside it")
    parser.add_argument("--segcli-recipe", default=None, metavar="NAME",
                        help="also train this segcli recipe (a shipped name or a TOML file) with the same budget")
    parser.add_argument("--segcli-epochs", type=int, default=None, metavar="N",
                        help="the segcli run's --epochs (its schedule's length; the budget stops it either way)")
    parser.add_argument("--segcli-python", default=str(ROOT / ".venv" / "bin" / "python"), metavar="PYTHON",
                        help="the Python that runs segcli (default: this repo's .venv)")
    parser.add_argument("--work", type=Path, default=None,
                        help="scratch folder for the dataset links and both runs (default: a new temp folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or (args.limit is not None and args.limit < 1):
        parser.error("--minutes must be > 0 and --limit >= 1")

    if importlib.util.find_spec("ultralytics") is None:  # a benchmark dependency only; segcli never imports it
        raise SystemExit(INSTALL_HINT)
    data = args.data.resolve()
    work = args.work or Path(tempfile.mkdtemp(prefix="peers-camvid-"))
    check_work_folder(work, data)
    work.mkdir(parents=True, exist_ok=True)
    work = work.resolve()
    # Before Ultralytics is imported (the functions below import it): its settings file in the scratch folder, not
    # in the user's config folder, and no look-ups on the network
    os.environ["YOLO_CONFIG_DIR"] = str(work / "ultralytics-settings")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    print(f"scratch folder: {work}", flush=True)

    dataset, pairs = camvid_dataset(data, args.limit)
    data_yaml = write_ultralytics_dataset(dataset.classes, pairs, work / "camvid-yolo")
    segcli_data = data
    if args.limit is not None:  # the same pairs for segcli, in CamVid's own layout
        segcli_data = work / "camvid-limited"
        link_pairs(pairs, segcli_data, lambda split: SPLIT_FOLDERS[split])
    print(f"dataset YAML: {data_yaml}\n{data_yaml.read_text()}", flush=True)

    if args.ultralytics_run is not None:
        peer = reuse_ultralytics(args.ultralytics_run.resolve(), work)
    else:
        peer = train_ultralytics(data_yaml, work, args)
    peer["val"] = score_ultralytics(Path(peer["weights"]), dataset, pairs["val"], args.imgsz)
    peer["val_last"] = score_ultralytics(Path(peer["last_weights"]), dataset, pairs["val"], args.imgsz)
    rows = [{"tool": f"ultralytics {versions().get('ultralytics', '?')} YOLO26n-sem", "epochs": peer["epochs"],
             "train_seconds": peer["train_seconds"], "wall_seconds": peer["wall_seconds"],
             "miou": peer["val"]["miou"], "pixel_accuracy": peer["val"]["pixel_accuracy"],
             "miou_last": peer["val_last"]["miou"], "own_miou": peer["own_val_miou"]}]
    own = None
    if args.segcli_recipe:
        own = train_and_score_segcli(segcli_data, work, args)
        rows.append({"tool": f"segcli {args.segcli_recipe}", "epochs": own["epochs"],
                     "train_seconds": own["train_seconds"], "wall_seconds": own["wall_seconds"],
                     "miou": own["val"]["miou"], "pixel_accuracy": own["val"]["pixel_accuracy"],
                     "miou_last": own["val_last"]["miou"]})

    print()
    print(f"CamVid val ({len(pairs['val'])} images; {len(pairs['train'])} train), {args.minutes:g} min each, float32, "
          f"{machine()['cpu']}, {os.cpu_count()} cores")
    print_table(rows)
    if args.json is not None:
        from segcli.files import write_json

        result = {
            "benchmark": "benchmarks/peers/ultralytics_camvid.py",
            "command": " ".join(["python", "benchmarks/peers/ultralytics_camvid.py", *sys.argv[1:]]),
            "segcli_commit": git_commit(),
            "machine": machine(), "versions": versions(), "minutes": args.minutes, "limit": args.limit,
            "data": str(data), "train_images": len(pairs["train"]), "val_images": len(pairs["val"]),
            "precision": "float32",
            "scorer": "segcli.scoring (val, native size, void left out; best checkpoint and last epoch)",
            "dataset_yaml": str(data_yaml), "rows": rows, "ultralytics": peer, "segcli": own,
        }
        write_json(args.json, {**result, **table_keys(result)})
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
