"""segcli evaluate: confusion matrix, pixel accuracy, IoU per class (and the tutorial's figure)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from segcli.cli import render
from segcli.cli.options import ENGINE_HELP, PALETTE_BY_COLOUR_HELP, RUN_PRECISION_HELP, TTA_HELP, tta_flag
from segcli.errors import SegcliError


def evaluate_cmd(
    model: Path = typer.Argument(..., help="A .keras model file written by `segcli train`, or its export "
                                 "(.onnx, .xml, .tflite, a SavedModel folder; see segcli export)."),
    data_dir: Path = typer.Argument(..., help="Dataset folder, or a dataset file (.yaml, .toml); "
                                    "see `segcli data check`."),
    split: str = typer.Option("val", "--split", help="val|test (or train)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write confusion.csv, confusion.png, evaluation.json here."),
    classes: Optional[Path] = typer.Option(None, "--classes", help="classes.json (default: DATA_DIR/classes.json, "
                                           "else the classes the model was trained with)."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Equal-size images per model call."),
    json_out: bool = typer.Option(False, "--json", help="Print only the results as JSON."),
    precision: str = typer.Option("auto", "--precision", help=RUN_PRECISION_HELP),
    tta: Optional[str] = typer.Option(None, "--tta", help=TTA_HELP),
    palette_by_colour: bool = typer.Option(False, "--palette-by-colour",
                                           help=PALETTE_BY_COLOUR_HELP + " Not given: as the model was trained."),
    engine: Optional[str] = typer.Option(None, "--engine", help=ENGINE_HELP),
    tutorial: bool = typer.Option(True, "--tutorial/--no-tutorial",
                                  help="Also score the tutorial's protocol (void counted, centre crops): a second "
                                  "pass over the split."),
):
    """Score MODEL on a split of DATA_DIR at full image size: pixel accuracy, mIoU, IoU and accuracy per class."""
    import json

    from segcli.evaluation import evaluate
    from segcli.files import check_writable_dir
    from segcli.inference.engines import load_predictor

    augment = tta_flag(tta)
    if split not in ("train", "val", "test"):
        raise SegcliError(f"--split {split!r}: expected val, test or train")
    if not data_dir.exists():
        raise SegcliError("no such file or directory", data_dir)
    if out is not None:
        check_writable_dir(out)  # before the model runs
    loaded = load_predictor(model, precision, engine)
    with render.RichProgress(render.err_console, quiet=json_out) as progress:
        result = evaluate(loaded, data_dir, split, classes_file=classes, batch_size=batch_size, out_dir=out,
                          tta=augment, tutorial=tutorial, progress=progress,
                          palette_by_colour=palette_by_colour or None)  # not given: as the model was trained
    if json_out:
        typer.echo(json.dumps(result, indent=2))
        return
    render.evaluation(result, model, data_dir, split, out)
