"""segcli train: a run folder from a model name, a dataset and a recipe (or --resume)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from segcli.cli import render
from segcli.cli.options import overrides as flag_overrides
from segcli.choices import LOSSES
from segcli.recipe.spec import TrainSpec
from segcli.cli.options import (ENCODER_HELP, ENCODER_WEIGHTS_HELP, PALETTE_BY_COLOUR_HELP, encoder_flags, list_flag,
                                size_flag)
from segcli.errors import SegcliError


def train_cmd(
    model: Optional[str] = typer.Argument(None, help="Architecture: fcn, unet, ... (see `segcli models`)."),
    data_dir: Optional[Path] = typer.Argument(None, help="Dataset folder, or a dataset file (.yaml, .toml); "
                                              "see `segcli data check`."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="Recipe TOML file, or a shipped recipe's name."),
    epochs: Optional[str] = typer.Option(None, "--epochs", metavar="INT"),
    batch_size: Optional[str] = typer.Option(None, "--batch-size", metavar="INT",
                                             help="Global batch size (all replicas)."),
    lr: Optional[str] = typer.Option(None, "--lr", metavar="FLOAT", help="Learning rate."),
    size: Optional[str] = typer.Option(None, "--size", help="Training crop HxW, e.g. 368x480."),
    scale: Optional[str] = typer.Option(None, "--scale", metavar="MIN,MAX",
                                        help="Random scale range, e.g. 0.5,2.0 (the crop is padded with ignore "
                                             "where the scaled image is smaller)."),
    loss: Optional[str] = typer.Option(None, "--loss", help=f"{'|'.join(LOSSES)} (ohem: the hardest pixels, "
                                       "[train] ohem_threshold and ohem_min_kept)."),
    ema_momentum: Optional[str] = typer.Option(None, "--ema-momentum", metavar="FLOAT",
                                               help="Validate and save a moving average of the weights with this "
                                                    "momentum, e.g. 0.99 (0: off)."),
    aux_weight: Optional[str] = typer.Option(None, "--aux-weight", metavar="FLOAT",
                                             help=f"Train an auxiliary head on the stride-{TrainSpec.aux_stride} "
                                                  "features ([train] aux_stride) with this loss weight, e.g. 0.4; not "
                                                  "saved (0: off)."),
    train_splits: Optional[str] = typer.Option(None, "--train-splits", metavar="train[,val]",
                                               help="Train on these splits; train,val trains on val too (the "
                                                    "model to ship: no val score, the last epoch is kept)."),
    encoder: Optional[str] = typer.Option(None, "--encoder", metavar="NAME", help=ENCODER_HELP),
    encoder_weights: Optional[str] = typer.Option(None, "--encoder-weights", metavar="none|imagenet|PATH",
                                                  help=ENCODER_WEIGHTS_HELP),
    precision: Optional[str] = typer.Option(None, "--precision", help="auto|float32|mixed_float16|mixed_bfloat16"),
    distribute: Optional[str] = typer.Option(None, "--distribute", help="auto|none|mirrored|multi (multi: several processes, on JAX; docs/backends.md)."),
    jit: Optional[str] = typer.Option(None, "--jit", help="XLA compile: auto|true|false (auto: on with one GPU on tensorflow, always on jax; on torch true is torch.compile)."),
    max_minutes: Optional[str] = typer.Option(None, "--max-minutes", metavar="FLOAT",
                                              help="Stop after this much training time (0: no limit)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: runs/MODEL-TIMESTAMP)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue an interrupted run folder."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out folder."),
    seed: Optional[str] = typer.Option(None, "--seed", metavar="INT"),
    classes: Optional[Path] = typer.Option(None, "--classes", help="classes.json (default: DATA_DIR/classes.json)."),
    palette_by_colour: bool = typer.Option(False, "--palette-by-colour",
                                           help=PALETTE_BY_COLOUR_HELP + " The recipe's data option palette_by_colour."),
):
    """Train MODEL on DATA_DIR and write a run folder (model.keras, best.keras, metrics, history, curves)."""
    from segcli.runs import train_and_evaluate
    from segcli.training import TrainingInterrupted

    overrides = flag_overrides(model={"options": encoder_flags(encoder, encoder_weights)},
                               data={"size": size_flag(size), "palette_by_colour": True if palette_by_colour else None,
                                     "scale": list_flag(scale), "train_splits": list_flag(train_splits)},
                               train={"epochs": epochs, "batch_size": batch_size, "lr": lr, "precision": precision,
                                      "loss": loss, "ema_momentum": ema_momentum, "aux_weight": aux_weight,
                                      "distribute": distribute, "jit": jit, "max_minutes": max_minutes, "seed": seed})
    if resume is None and (model is None or data_dir is None):
        raise SegcliError("MODEL and DATA_DIR are required (or --resume RUN_DIR)")
    try:
        with render.RichProgress() as progress:
            result = train_and_evaluate(model, data_dir, recipe_file=recipe, overrides=overrides, out=out,
                                        resume=resume, force=force, classes_file=classes, progress=progress)
    except TrainingInterrupted as exc:
        render.train_interrupted(exc.run_dir)
        from segcli.cli.joined import leave_now_if_joined

        leave_now_if_joined(130)
        raise typer.Exit(130)
    if result.process_index:
        render.train_other_process(result)
        return
    render.train_summary(result)
