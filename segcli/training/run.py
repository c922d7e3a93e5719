"""`train`: recipe + data folder -> a run folder with models, metrics, history and plots.

Run folder: model.keras (last), best.keras (best val mIoU), recipe.toml (resolved), classes.json,
history.csv, logs/ (TensorBoard), metrics.json, curves.png, run.json, backup/ (while unfinished), .segcli.

What a kill leaves: every file is written under a temporary name and renamed, and backup/ holds the last
finished epoch (weights, optimizer, history, best so far) until the final files exist, so `--resume` loses
at most the unfinished epoch, whatever moment the kill came at; it also removes a killed writer's leftovers.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import keras
import tensorflow as tf

from segcli import recipe as recipes
from segcli.data import Augment, ClassMap, check_dataset, make_pipeline, open_dataset
from segcli.errors import SegcliError
from segcli.files import (check_replaceable, ensure_writable_dir, folder_lock, mark_segcli_folder, remove_leftovers,
                          write_json)
from segcli.modelfile import save_model
from segcli.models import build_model, count_params, gflops, output_stride
from segcli.precision import policy, resolve_precision
from segcli.system import hardware_summary, peak_rss_mb
from segcli.training.callbacks import (PerClassIoU, RichProgress, RunBackup, SaveBest, Throughput, TimeBudget,
                                      read_backup_state)
from segcli.training.distribute import execution_settings, is_distributed, resolve_strategy
from segcli.training.losses import make_loss, median_frequency_weights
from segcli.training.metrics import segmentation_metrics
from segcli.training.optim import make_optimizer
from segcli.training.plots import plot_curves


class TrainingInterrupted(SegcliError):
    """Ctrl-C during training: the last finished epoch is backed up and `--resume` continues."""

    exit_code = 130

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        super().__init__(f"training interrupted; continue with: segcli train --resume {run_dir}")


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict
    history: list[dict] = field(default_factory=list)


def _size(value) -> list[int]:
    return [int(v) for v in value] if value else []


def _inside(path: Path, folder: Path) -> bool:
    path, folder = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return path == folder or folder in path.parents


def check_run_dir(out: str | Path | None, force: bool, data_dir: str | Path | None = None) -> bool:
    """Before any work: may ``out`` become the run folder? True when it holds a run to replace (--force).
    A folder segcli did not make is never replaced, nor one that holds the data."""
    if out is None:
        return False
    out = Path(out)
    if data_dir is not None and _inside(data_dir, out):
        raise SegcliError(f"is the data folder or holds it ({data_dir}); choose another --out", out)
    replace = check_replaceable(out, force, "run folder", also=", or --resume to continue it", kind="run")
    ensure_writable_dir(out.parent if replace or not out.exists() else out)
    return replace


def prepare_run_dir(out: str | Path | None, model_name: str, force: bool, data_dir=None) -> Path:
    """A new folder, marked as segcli's; an existing non-empty one only with force and only if it is a segcli
    run folder (then it is emptied first)."""
    if out is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{model_name}-{stamp}"
        n = 1
        while run_dir.exists():
            n += 1
            run_dir = Path("runs") / f"{model_name}-{stamp}-{n}"
    else:
        run_dir = Path(out)
        if check_run_dir(run_dir, force, data_dir):
            with folder_lock(run_dir):  # a folder another training is writing is refused, not emptied
                for child in run_dir.iterdir():
                    if child.name == ".segcli.lock":
                        continue
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    ensure_writable_dir(run_dir)
    mark_segcli_folder(run_dir, "run")
    return run_dir


def read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _class_weights(setting: str, report, num_classes: int):
    if setting in ("none", "", None):
        return None
    if setting == "median-frequency":
        shares = list(report.pixel_share) + [report.void_share]  # the void share is used only with void_as_class
        return median_frequency_weights(shares[:num_classes])
    path = Path(setting)
    try:
        weights = [float(w) for w in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError) as exc:
        raise SegcliError(f"class weights file must be a JSON list of numbers ({exc})", path) from None
    if len(weights) != num_classes:
        raise SegcliError(f"class weights file has {len(weights)} values for {num_classes} classes", path)
    return weights


def _resolve_recipe(model_name, recipe_file, overrides, console) -> dict:
    """Defaults < recipe file < flags; MODEL replaces the recipe's model (and drops its options) if they differ."""
    file_recipe = recipes.read_recipe_file(recipe_file) if recipe_file else {}
    file_model = file_recipe.get("model", {}).get("name")
    if model_name and file_model not in (None, model_name):
        console.print(f"[yellow]note:[/] the recipe's model '{file_model}' is replaced by '{model_name}'"
                      " (its model options are not used)")
        file_recipe["model"] = {"options": {}}
    overrides = {k: dict(v) for k, v in (overrides or {}).items()}
    if model_name:
        overrides.setdefault("model", {})["name"] = model_name
    return recipes.resolve(file_recipe, overrides)


RESUME_CONFLICTS = {"model_name": "MODEL", "data_dir": "DATA_DIR", "recipe_file": "--recipe", "out": "--out",
                    "force": "--force", "classes_file": "--classes"}


def _check_resume_args(given: dict, overrides: dict | None) -> None:
    """--resume continues a run exactly as its recipe.toml says: anything that would change it is refused."""
    names = [flag for key, flag in RESUME_CONFLICTS.items() if given.get(key)]
    names += [f"--{key.replace('_', '-')}" for section in (overrides or {}).values() if isinstance(section, dict)
              for key, value in section.items() if value is not None]
    if names:
        raise SegcliError(f"--resume continues a run with its own recipe.toml and cannot take {', '.join(names)}; "
                          "to train with other settings, start a new run (--out)")


def _load_run(run_dir: Path) -> tuple[dict, Path, ClassMap]:
    """(resolved recipe, data folder, the dataset's classes) of a run folder to resume; a finished run, or one
    with nothing to resume from, is a one-line error (never a fresh start over its models)."""
    if not run_dir.is_dir():
        raise SegcliError("no such run folder", run_dir)
    if not (run_dir / "recipe.toml").is_file() or not (run_dir / "run.json").is_file():
        raise SegcliError("not a segcli run folder (no recipe.toml / run.json)", run_dir)
    try:
        run_info = json.loads((run_dir / "run.json").read_text())
        data_dir, dataset_classes = Path(run_info["data_dir"]), run_info["dataset_classes"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SegcliError(f"run.json is damaged ({exc})", run_dir / "run.json") from None
    recipe = recipes.load_resolved(run_dir / "recipe.toml")
    state = read_backup_state(run_dir / "backup")
    history = read_history(run_dir / "history.csv")
    if state is None and (run_info.get("finished") or (run_dir / "metrics.json").is_file()):
        done = len(history)
        raise SegcliError(f"this run is finished ({done}/{recipe['train']['epochs']} epochs); nothing to resume. "
                          "To train longer, start a new run with more --epochs", run_dir)
    if state is None and (history or (run_dir / "backup").exists()):
        raise SegcliError("no usable training backup (backup/state.json) to resume from; start the run again "
                          "with --force", run_dir)
    return recipe, data_dir, ClassMap.from_dict(dataset_classes)


def _pipelines(dataset, recipe: dict, stride: int, replicas: int):
    """(train, steps per epoch, val or None): tf.data pipelines; val images whole, padded to the output stride.

    The training pipeline repeats: one iterator lives through all epochs, so its prefetching carries on
    across epoch ends and validation instead of starting cold each epoch."""
    data_cfg, train_cfg = recipe["data"], recipe["train"]
    batch, seed = int(train_cfg["batch_size"]), int(train_cfg["seed"])
    crop = _size(data_cfg["size"])
    if any(c % stride for c in crop):
        raise SegcliError(f"training size {crop[0]}x{crop[1]} must divide by the model's output stride {stride}")
    cache = data_cfg["cache"]
    cache = cache if cache == "auto" else str(cache).lower() in ("true", "1", "yes")
    void_as_class = bool(data_cfg["void_as_class"])
    aug = Augment(scale=tuple(data_cfg["scale"]), short_side=tuple(data_cfg["short_side"]) or None,
                  crop=tuple(crop), center_crop=bool(data_cfg["center_crop"]), flip=bool(data_cfg["flip"]))
    steps = len(dataset.splits["train"]) // batch
    if steps == 0:
        raise SegcliError(f"batch size {batch} is larger than the {len(dataset.splits['train'])} training pairs")
    train_ds = make_pipeline(dataset.splits["train"], dataset.classes, dataset.encoding, batch_size=batch,
                             training=True, augment=aug, seed=seed, cache=cache, void_as_class=void_as_class,
                             repeat=True)
    val_pairs = dataset.splits.get("val") or []
    if not val_pairs:
        return train_ds, steps, None
    eval_crop = _size(data_cfg["eval_crop"])
    val_batch = replicas * (batch // replicas if eval_crop else 1) or replicas
    if replicas > 1:  # every replica needs a non-empty batch: repeat the first few pairs to fill the last one
        val_pairs = val_pairs + val_pairs[:(-len(val_pairs)) % val_batch]
    val_ds = make_pipeline(val_pairs, dataset.classes, dataset.encoding, batch_size=val_batch, training=False,
                           crop=tuple(eval_crop) or None, pad_to_multiple=stride,
                           eval_short_side=int(data_cfg["eval_short_side"]) or None, cache=cache,
                           void_as_class=void_as_class)
    return train_ds, steps, val_ds


def _summary(model, recipe, run_dir: Path, run_info: dict, best: SaveBest, budget: TimeBudget, dataset,
             classes: ClassMap, console) -> dict:
    """metrics.json: figures of the last epoch, speed (epochs after the first), best epoch, final evaluation."""
    history = read_history(run_dir / "history.csv")
    last = history[-1] if history else {}
    rates = [_float(row.get("images_per_sec")) for row in history[1:] or history]
    rates = [r for r in rates if math.isfinite(r)]
    crop = _size(recipe["data"]["size"])
    return {
        "model": recipe["model"]["name"], "params": count_params(model), "gflops_per_image": gflops(model, *crop),
        "gflops_size": crop, "epochs": len(history), "epochs_planned": int(recipe["train"]["epochs"]),
        "stopped_by_time_budget": budget.stopped_early,
        "train_images_per_sec": sum(rates) / len(rates) if rates else math.nan,
        "train_seconds": sum(_float(row.get("train_seconds")) for row in history),
        "val": {
            "pixel_accuracy": _float(last.get("val_pixel_accuracy")), "miou": _float(last.get("val_miou")),
            "iou": {name: _float(last.get(f"val_iou_{name}")) for name in dataset.classes.names},
        },
        "evaluation": (_final_evaluation(run_dir, run_info["data_dir"], dataset, console)
                       if dataset.splits.get("val") else None),
        "best_epoch": best.best_epoch, "best_val_miou": None if best.best_epoch is None else best.best,
        "precision": run_info["precision"], "strategy": run_info["strategy"], "hardware": run_info["hardware"],
        "peak_rss_mb": peak_rss_mb(), "classes": list(classes.names),
    }


def train(model_name: str | None, data_dir: str | Path | None, *, recipe_file=None, overrides: dict | None = None,
          out=None, resume=None, force: bool = False, classes_file=None, console=None) -> TrainResult:
    """Train one model; returns the run folder and its final metrics. Raises TrainingInterrupted on Ctrl-C."""
    from rich.console import Console

    console = console or Console(quiet=True)
    run_dir = None
    if resume is not None:
        _check_resume_args({"model_name": model_name, "data_dir": data_dir, "recipe_file": recipe_file, "out": out,
                            "force": force, "classes_file": classes_file}, overrides)
        run_dir = Path(resume)
        recipe, data_dir, classes_file = _load_run(run_dir)
    elif data_dir is None:
        raise SegcliError("DATA_DIR is required (or --resume RUN_DIR)")
    else:
        recipe = _resolve_recipe(model_name, recipe_file, overrides, console)
        check_run_dir(out, force, data_dir)  # before any work: a folder that may not be replaced is refused now
    data_cfg, train_cfg, model_cfg = recipe["data"], recipe["train"], recipe["model"]
    keras.utils.set_random_seed(int(train_cfg["seed"]))

    dataset = open_dataset(data_dir, classes=classes_file or data_cfg["classes"] or None,
                           val_fraction=float(data_cfg["val_fraction"]), seed=int(train_cfg["seed"]))
    report = check_dataset(dataset)
    for notice in report.notices:
        console.print(f"note: {notice}", markup=False, highlight=False)
    if not report.ok:
        first = report.problems[0]
        raise SegcliError(f"{len(report.problems)} problem(s) in the dataset, first: {first.path}: {first.problem} "
                          f"(see `segcli data check {data_dir}`)", data_dir)
    if not dataset.splits.get("train"):
        raise SegcliError("no training pairs found", data_dir)
    classes = dataset.classes.with_void_as_class() if data_cfg["void_as_class"] else dataset.classes
    # The loss skips only the ignore label (padding, and void unless void is trained as class K). Scores
    # always leave void out: with void_as_class the model may predict it, which counts as an error.
    scored_classes = dataset.classes.num_classes
    score_ignore = scored_classes if data_cfg["void_as_class"] else classes.ignore_index

    precision, why = resolve_precision(train_cfg["precision"])
    strategy, strategy_desc = resolve_strategy(train_cfg["distribute"])
    gpu = bool(tf.config.list_physical_devices("GPU"))
    jit, spe = execution_settings(train_cfg["jit"], train_cfg["steps_per_execution"], gpu=gpu,
                                  distributed=is_distributed(strategy))
    with strategy.scope(), policy(precision):
        model = build_model(model_cfg["name"], classes.num_classes, **model_cfg.get("options", {}))
    train_ds, steps, val_ds = _pipelines(dataset, recipe, output_stride(model), strategy.num_replicas_in_sync)
    weights = _class_weights(train_cfg["class_weights"], report, classes.num_classes)
    with strategy.scope():
        metrics = segmentation_metrics(classes.num_classes, score_ignore, scored_classes)
        model.compile(optimizer=make_optimizer(train_cfg, steps),
                      loss=make_loss(train_cfg["loss"], classes.num_classes, classes.ignore_index, weights,
                                     float(train_cfg["label_smoothing"])),
                      metrics=metrics, jit_compile=jit, steps_per_execution=spe)

    new_run = run_dir is None
    if new_run:
        run_dir = prepare_run_dir(out, model_cfg["name"], force, data_dir)
    with folder_lock(run_dir):  # a second `train --resume` or `--force` on this folder is refused meanwhile
        remove_leftovers(run_dir)  # temporaries of a writer that was killed
        if new_run:
            recipes.save(recipe, run_dir / "recipe.toml")
            classes.save(run_dir / "classes.json")
        run_info = {
            "data_dir": str(Path(data_dir).resolve()), "model": model_cfg["name"], "precision": precision,
            "precision_reason": why, "strategy": strategy_desc, "replicas": strategy.num_replicas_in_sync,
            "jit": jit, "steps_per_execution": spe, "hardware": hardware_summary(), "layout": dataset.layout,
            "encoding": dataset.encoding, "dataset_classes": dataset.classes.to_dict(),
            "train_pairs": len(dataset.splits["train"]), "val_pairs": len(dataset.splits.get("val") or []),
            "started": dt.datetime.now().isoformat(timespec="seconds"),
        }
        write_json(run_dir / "run.json", run_info)
        meta = {"recipe": recipe, "precision": precision, "model_name": model_cfg["name"]}

        budget = TimeBudget(float(train_cfg["max_minutes"]))
        best = SaveBest(lambda m: save_model(m, run_dir / "best.keras", classes, meta), monitor="val_miou")
        backup = RunBackup(run_dir / "backup", run_dir / "history.csv", best)  # resuming: restores the best so far
        # order matters: the backup records the logs the callbacks before it add, and the best model it saved
        callbacks = [Throughput(int(train_cfg["batch_size"])), PerClassIoU(metrics[1], dataset.classes.names),
                     budget, best, backup,
                     keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False, profile_batch=0),
                     RichProgress(console)]
        console.print(f"run folder: {run_dir}\nmodel {model_cfg['name']} ({count_params(model):,} parameters), "
                      f"precision {precision} ({why}), {strategy_desc}, {run_info['train_pairs']} train / "
                      f"{run_info['val_pairs']} val pairs, batch {train_cfg['batch_size']}, {steps} steps/epoch",
                      highlight=False, markup=False)
        try:
            model.fit(train_ds, steps_per_epoch=steps, validation_data=val_ds, epochs=int(train_cfg["epochs"]),
                      verbose=0, callbacks=callbacks, shuffle=False)  # the pipeline shuffles
        except KeyboardInterrupt:
            raise TrainingInterrupted(run_dir) from None

        # The final files; backup/ stays until they all exist, so a kill here is resumed without retraining.
        save_model(model, run_dir / "model.keras", classes, meta)
        if best.best_epoch is None:  # no validation data: the last model is the best we know
            save_model(model, run_dir / "best.keras", classes, meta)
        metrics_out = _summary(model, recipe, run_dir, run_info, best, budget, dataset, classes, console)
        write_json(run_dir / "metrics.json", metrics_out)
        history = read_history(run_dir / "history.csv")
        if history:
            plot_curves(history, run_dir / "curves.png", title=f"{model_cfg['name']} on {Path(data_dir).name}")
        write_json(run_dir / "run.json", {**run_info, "finished": dt.datetime.now().isoformat(timespec="seconds")})
        shutil.rmtree(run_dir / "backup", ignore_errors=True)
        return TrainResult(run_dir=run_dir, metrics=metrics_out, history=history)


def _final_evaluation(run_dir: Path, data_dir, dataset, console) -> dict:
    """best.keras scored by `segcli evaluate`: full-size val with void ignored, and the tutorial's figure."""
    from segcli.evaluation import evaluate
    from segcli.modelfile import load_model

    console.print("evaluating best.keras on val (full size, and the tutorial's protocol) ...")
    result = evaluate(load_model(run_dir / "best.keras"), data_dir, "val", classes_file=dataset.classes)
    tutorial = result.get("tutorial") or {}
    return {"model": "best.keras", "pixel_accuracy": result["pixel_accuracy"], "miou": result["miou"],
            "iou": {c["name"]: c["iou"] for c in result["per_class"]},
            "tutorial_pixel_accuracy": tutorial.get("pixel_accuracy_void_counted"),
            "tutorial_label": tutorial.get("label")}


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
