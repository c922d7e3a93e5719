"""A whole run: train, then score best.keras with `evaluate` (metrics.json's "evaluation" part). Sits above
segcli.training and segcli.evaluation, so training never imports evaluation. The CLI's `train` and `compare`'s
child processes call `train_and_evaluate`."""

from __future__ import annotations

from pathlib import Path

from segcli.data import ClassMap
from segcli.runfolder import RunFolder
from segcli.training import TrainResult, train


def evaluate_best(run: RunFolder, data_dir: str | Path, dataset_classes: ClassMap) -> dict:
    """best.keras scored by `segcli evaluate` on the val split: full size with void ignored, and the tutorial's
    figure. Returns metrics.json's "evaluation" part."""
    from segcli.evaluation import evaluate
    from segcli.modelfile import load_model

    result = evaluate(load_model(run.best_path), data_dir, "val", classes_file=dataset_classes)
    tutorial = result.get("tutorial") or {}
    return {"model": run.best_path.name, "pixel_accuracy": result["pixel_accuracy"], "miou": result["miou"],
            "iou": {c["name"]: c["iou"] for c in result["per_class"]},
            "tutorial_pixel_accuracy": tutorial.get("pixel_accuracy_void_counted"),
            "tutorial_label": tutorial.get("label")}


def train_and_evaluate(model_name: str | None, data_dir: str | Path | None, **kwargs) -> TrainResult:
    """`segcli.training.train` (same arguments: recipe_file, overrides, out, resume, force, classes_file,
    progress), with best.keras evaluated on val before metrics.json is written and the run marked finished."""
    return train(model_name, data_dir, evaluate_best=evaluate_best, **kwargs)


__all__ = ["train_and_evaluate", "evaluate_best"]
