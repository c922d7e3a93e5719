"""segcli data check: read a dataset folder once and report it; segcli data convert: write it as segcli's
images + masks layout."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from segcli.cli import render
from segcli.cli.options import PALETTE_BY_COLOUR_HELP

app = typer.Typer(help="Inspect, check and convert datasets.", no_args_is_help=True)


@app.command("check")
def data_check(
    directory: Path = typer.Argument(..., metavar="DIR", help="Dataset folder, a CSV of image,mask rows, or a "
                                     "dataset file (.yaml, .toml)."),
    classes: Optional[Path] = typer.Option(None, "--classes", help="classes.json (default: DIR/classes.json, "
                                           "else inferred from the masks)."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of train held out as val when "
                                       "there is no val split."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON only."),
    palette_by_colour: bool = typer.Option(False, "--palette-by-colour", help=PALETTE_BY_COLOUR_HELP),
):
    """Read every image and mask once: layout, encoding, counts, sizes, class shares and every problem.

    Exit 0 when clean, 1 when problems were found, 2 when DIR cannot be used at all."""
    import json

    from segcli.data import check_dataset, open_dataset

    report = check_dataset(open_dataset(directory, classes=classes, val_fraction=val_fraction,
                                        palette_by_colour=palette_by_colour))
    if json_out:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        render.data_report(report)
    if not report.ok:
        raise typer.Exit(1)


@app.command("convert")
def data_convert(
    source: Path = typer.Argument(..., metavar="SRC", help="Dataset: a folder of any format segcli reads, a CSV "
                                  "or a dataset file."),
    out: Path = typer.Argument(..., metavar="OUT", help="Folder to write: OUT/{train,val,test}/images and masks, "
                               "OUT/classes.json."),
    classes: Optional[Path] = typer.Option(None, "--classes", help="classes.json to read SRC with (default: "
                                           "SRC's own, else its format's, else inferred from the masks)."),
    force: bool = typer.Option(False, "--force", help="Replace OUT when an earlier `data convert` wrote it."),
    palette_by_colour: bool = typer.Option(False, "--palette-by-colour", help=PALETTE_BY_COLOUR_HELP),
):
    """Write SRC as segcli's images + masks layout with its classes.json: annotations rasterised and labels
    mapped once, so training reads plain index masks. SRC's splits are kept; images are copied as they are."""
    from segcli.data.convert import convert_dataset

    with render.RichProgress(render.err_console) as progress:
        result = convert_dataset(source, out, classes=classes, force=force, palette_by_colour=palette_by_colour,
                                 progress=progress)
    counts = ", ".join(f"{split} {n}" for split, n in result.counts.items())
    typer.echo(f"wrote {sum(result.counts.values())} pairs ({counts}) of {source} ({result.source_layout}) to "
               f"{result.out} in {result.seconds:.1f} s; {result.classes.num_classes} classes: "
               f"{', '.join(result.classes.names)}")
