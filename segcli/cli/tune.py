"""segcli tune: search the knobs a recipe's [tune] table names (KerasTuner), each trial a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from segcli.cli import render


def tune_cmd(
    model: Optional[str] = typer.Argument(None, help="Architecture: fcn, unet, ... (see `segcli models`)."),
    data_dir: Optional[Path] = typer.Argument(None, help="Dataset folder, or a dataset file (.yaml, .toml); "
                                              "see `segcli data check`."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="Recipe with a \\[tune] table (a file, or a shipped "
                                         "recipe's name)."),
    trials: Optional[str] = typer.Option(None, "--trials", metavar="INT", help="Number of trials (default 10)."),
    max_minutes: Optional[str] = typer.Option(None, "--max-minutes", metavar="FLOAT",
                                              help="Time budget of the whole search (0: no limit, the default)."),
    algorithm: Optional[str] = typer.Option(None, "--algorithm", help="random|bayesian|hyperband (default random)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Search folder: trial-NNN/ run folders, tune.md/.json/"
                                       ".png, best-recipe.toml."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the search in this folder "
                                          "(takes --trials and --max-minutes)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out search folder."),
    classes: Optional[Path] = typer.Option(None, "--classes", help="classes.json (default: DATA_DIR/classes.json)."),
):
    """Search a recipe's \\[tune] knobs for MODEL on DATA_DIR, scored by val mIoU; writes best-recipe.toml."""
    from segcli.tune import TuneInterrupted, tune

    try:
        with render.RichProgress() as progress:
            result = tune(model, data_dir, recipe_file=recipe, trials=trials, max_minutes=max_minutes,
                          algorithm=algorithm, out=out, resume=resume, force=force, classes_file=classes,
                          progress=progress)
    except TuneInterrupted as exc:
        render.tune_interrupted(exc.out)
        raise typer.Exit(130)
    render.tune_summary(result)
