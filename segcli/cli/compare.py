"""segcli compare: train several models under one recipe and seed (or read finished runs), side by side."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from segcli.cli import render
from segcli.cli.options import overrides as flag_overrides
from segcli.cli.options import ENCODER_HELP, ENCODER_WEIGHTS_HELP, encoder_flags, size_flag
from segcli.errors import SegcliError

SAMPLE_DATA = Path(__file__).resolve().parents[2] / "sample_data"  # the checkout's sample_data/


def compare_cmd(
    args: Optional[List[str]] = typer.Argument(None, help="MODEL... [DATA_DIR] (default data: sample_data/); "
                                               "with --from, more run folders."),
    recipe: Optional[List[str]] = typer.Option(None, "--recipe", help="One recipe for all, or one per model."),
    epochs: Optional[str] = typer.Option(None, "--epochs", metavar="INT"),
    batch_size: Optional[str] = typer.Option(None, "--batch-size", metavar="INT"),
    size: Optional[str] = typer.Option(None, "--size", help="Training crop HxW."),
    encoder: Optional[str] = typer.Option(None, "--encoder", metavar="NAME", help=ENCODER_HELP),
    encoder_weights: Optional[str] = typer.Option(None, "--encoder-weights", metavar="none|imagenet|PATH",
                                                  help=ENCODER_WEIGHTS_HELP),
    max_minutes: Optional[str] = typer.Option(None, "--max-minutes", metavar="FLOAT",
                                              help="Training time budget per model."),
    precision: Optional[str] = typer.Option(None, "--precision"),
    seed: Optional[str] = typer.Option(None, "--seed", metavar="INT"),
    classes: Optional[Path] = typer.Option(None, "--classes", help="classes.json for DATA_DIR."),
    from_runs: Optional[List[Path]] = typer.Option(None, "--from", help="Compare finished run folders instead: "
                                                   "--from RUN_DIR RUN_DIR ... (or --from repeated)."),
    out: Path = typer.Option(Path("compare-out"), "--out", help="Folder for runs and compare.md/.json/.png."),
):
    """Train each MODEL under one recipe and seed (or read --from runs) and print them side by side."""
    from segcli import recipe as recipes
    from segcli.compare import compare

    overrides = flag_overrides(model={"options": encoder_flags(encoder, encoder_weights)},
                               data={"size": size_flag(size)},
                               train={"epochs": epochs, "batch_size": batch_size, "max_minutes": max_minutes,
                                      "precision": precision, "seed": seed})
    recipes.resolve(None, overrides)  # every flag checked before anything is trained or written
    from segcli.data.formats.datasetfile import is_dataset_file

    args = list(args or [])
    data_dir = None
    if from_runs:  # `--from A B`: the option takes A, B arrives as an argument; nothing is trained
        from_runs, args = list(from_runs) + [Path(a) for a in args], []
    elif args and (Path(args[-1]).is_dir() or is_dataset_file(args[-1])):
        data_dir = Path(args.pop())
    if not from_runs:
        if not args:
            raise SegcliError("name at least one MODEL to train (or give --from RUN_DIR ...)")
        if data_dir is None and not SAMPLE_DATA.is_dir():
            raise SegcliError("no DATA_DIR given and sample_data/ not found", SAMPLE_DATA)
        data_dir = data_dir or SAMPLE_DATA
        for name in recipe or []:  # each recipe file and MODEL checked before the first training
            recipes.read_recipe_file(name)
        for name in args:  # with the model flags (--encoder), checked against each model's options
            recipes.resolve(None, recipes.merge(overrides, {"model": {"name": name}}))
    with render.RichProgress() as progress:
        result = compare(args, data_dir, out, recipes=recipe, overrides=overrides, classes_file=classes,
                         from_runs=from_runs, progress=progress)
    render.comparison(result, out)
