"""What each training option buys on CamVid val, each alone against the same short baseline (issue 31), and the
U-Net against the FCN at the same length: train the runs, then collect their figures into
docs/results/camvid-options.json (the table in docs/camvid-results.md, README's "What buys mIoU").

    python benchmarks/options_ablation.py train ../shared/data/camvid --out runs/options     # ~15 min a run alone on 2 cores (bf16)
    python benchmarks/options_ablation.py train ../shared/data/camvid --out runs/options --only ohem,ema
    python benchmarks/options_ablation.py collect runs/options --json docs/results/camvid-options.json

Every run is a shipped recipe (camvid-fcn, camvid-unet) shortened to EPOCHS epochs (default 20) without a time
limit, so each trains the same steps whatever the machine's load; one change per run. Figures: the last epoch's
val mIoU (no epoch picked on val) and the best epoch's, with the training minutes and images/s (these depend on
what else ran on the machine: the JSON says so when given --note).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EPOCHS = 20
# name -> (shipped recipe, {(table, key): value} changed, label for the table)
RUNS = {
    "base": ("camvid-fcn", {}, "camvid-fcn as shipped"),
    "scale": ("camvid-fcn", {("data", "scale"): [0.5, 2.0]}, "wide random scale 0.5-2.0 (crop padded with ignore)"),
    "ohem": ("camvid-fcn", {("train", "loss"): "ohem"}, "OHEM cross-entropy (threshold 0.7, at least 1/16 kept)"),
    "ema": ("camvid-fcn", {("train", "ema_momentum"): 0.99}, "weight EMA, momentum 0.99"),
    "aux": ("camvid-fcn", {("train", "aux_weight"): 0.4}, "auxiliary head at stride 16, loss weight 0.4"),
    "combo": ("camvid-fcn", {("train", "loss"): "ohem", ("train", "ema_momentum"): 0.99,
                             ("train", "aux_weight"): 0.4}, "OHEM, weight EMA and the auxiliary head together"),
    "unet-base": ("camvid-unet", {}, "camvid-unet as shipped"),
    "unet-wide": ("camvid-unet", {("model.options", "base_filters"): 24, ("model.options", "decoder_convs"): 1,
                                  ("model.options", "decoder_filters"): [96, 48, 24, 12]},
                  "U-Net, wider encoder (24-192) and a narrow one-conv decoder (96-12)"),
}


def recipe_text(shipped: str, changes: dict, epochs: int) -> str:
    """The shipped recipe (read as `--recipe NAME` reads it: its classes file by absolute path) with `changes`
    set, epochs = `epochs` and no time limit, as TOML."""
    import tomli_w

    from segcli.recipe import read_recipe_file

    tables = read_recipe_file(shipped)
    for (table, key), value in {**changes, ("train", "epochs"): epochs, ("train", "max_minutes"): 0.0}.items():
        where = tables
        for part in table.split("."):
            where = where.setdefault(part, {})
        where[key] = value
    return tomli_w.dumps(tables)


def train(data: Path, out: Path, only: list[str], epochs: int) -> None:
    (out / "recipes").mkdir(parents=True, exist_ok=True)
    for name in only:
        shipped, changes, _ = RUNS[name]
        recipe = out / "recipes" / f"{name}.toml"
        recipe.write_text(recipe_text(shipped, changes, epochs))
        model = "unet" if shipped.startswith("camvid-unet") else "fcn"
        command = [sys.executable, "-m", "segcli", "train", model, str(data), "--recipe", str(recipe),
                   "--out", str(out / name)]
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True)


def collect(runs: Path, only: list[str], note: str | None) -> dict:
    rows, cpu = [], None
    base = {}
    for name in only:
        path = runs / name / "metrics.json"
        if not path.is_file():
            print(f"skipped {name}: no {path}", file=sys.stderr)
            continue
        m = json.loads(path.read_text())
        cpu = cpu or m["hardware"].removeprefix("CPU: ")
        row = {"name": name, "label": RUNS[name][2], "epochs": m["epochs"], "train_minutes": m["train_seconds"] / 60,
               "images_per_sec": m["train_images_per_sec"], "miou": m["val"]["miou"],
               "best_miou": m["best_val_miou"], "best_epoch": m["best_epoch"], "precision": m["precision"],
               "params": m["params"], "gflops": m["gflops_per_image"]}
        reference = base.setdefault(RUNS[name][0], row)  # the first run of each shipped recipe is its baseline
        row["gain"] = 100 * (row["miou"] - reference["miou"])
        rows.append(row)
    columns = [{"key": "label", "title": "change to the shipped recipe (20 epochs)", "format": "text"},
               {"key": "miou", "title": "val mIoU, last epoch", "format": "pct"},
               {"key": "gain", "title": "gain (points)", "format": "f1"},
               {"key": "best_miou", "title": "best epoch's", "format": "pct"},
               {"key": "gflops", "title": "GFLOPs", "format": "f2"},
               {"key": "train_minutes", "title": "training", "format": "min"},
               {"key": "images_per_sec", "title": "images/s", "format": "f1"}]
    return {"cpu": cpu, "precision": rows[0]["precision"] if rows else None, "date": str(datetime.date.today()),
            "command": "python benchmarks/options_ablation.py train ../shared/data/camvid --out runs/options && "
                       "python benchmarks/options_ablation.py collect runs/options --json docs/results/camvid-options.json",
            "note": note or "", "columns": columns, "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("train")
    t.add_argument("data", type=Path)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--epochs", type=int, default=EPOCHS)
    c = sub.add_parser("collect")
    c.add_argument("runs", type=Path)
    c.add_argument("--json", type=Path)
    c.add_argument("--note")
    for p in (t, c):
        p.add_argument("--only", default=",".join(RUNS), help=f"comma list of {', '.join(RUNS)}")
    args = parser.parse_args(argv)
    only = [name for name in args.only.split(",") if name]
    unknown = [name for name in only if name not in RUNS]
    if unknown:
        parser.error(f"unknown run(s) {', '.join(unknown)}; valid: {', '.join(RUNS)}")
    if args.what == "train":
        train(args.data, args.out, only, args.epochs)
        return 0
    result = collect(args.runs, only, args.note)
    text = json.dumps(result, indent=2) + "\n"
    if args.json:
        from segcli.files import write_text

        write_text(args.json, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
