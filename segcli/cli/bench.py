"""segcli bench: training / pipeline / predict speed, tiled-predict memory, matmul peak, bf16 loss curves."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from segcli.bench import SECTIONS  # no TensorFlow at import
from segcli.cli import render
from segcli.cli.options import size_flag


def _bench_list(text: Optional[str]) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def bench_cmd(
    quick: bool = typer.Option(False, "--quick", help="Tiny sizes (64x64, batch 4, 3 steps): a smoke test of "
                               "about a minute (30 s with one of --models), plus up to a minute per net for "
                               "torch.compile in the torch section (--skip torch leaves it out)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset for the train path and the pipeline "
                                        "(default: ../shared/data/camvid, else synthetic PNGs)."),
    models: str = typer.Option("lambda-fcn,lambda-unet", "--models", help="Comma list of registered models, "
                               "each also as MODEL:ENCODER (unet:mobilenetv3small; see `segcli models`)."),
    precisions: Optional[str] = typer.Option(None, "--precisions", help="Comma list (default: float32,"
                                             "mixed_bfloat16; float32,mixed_float16 with a GPU)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Timed training steps per figure "
                                        "(default 10, 40 with a GPU, 3 with --quick)."),
    size: Optional[str] = typer.Option(None, "--size", metavar="HEIGHTxWIDTH", help="Training crop of the pipeline, "
                                       "train, fit and torch sections (default 368x480, the tutorial's; 64x64 with "
                                       "--quick)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Training batch of those "
                                             "sections "
                                             "(default 16; 4 with --quick)."),
    jit: str = typer.Option("auto", "--jit", help="XLA compile: auto|true|false (auto: on with a GPU)."),
    predict_batch: Optional[int] = typer.Option(None, "--predict-batch", min=1,
                                                help="Images per predict_on_batch call (default 8)."),
    json_out: Optional[str] = typer.Option(None, "--json", metavar="PATH|-",
                                           help="Also write the figures as JSON to PATH; '-' prints only JSON."),
    skip: str = typer.Option("", "--skip", help=f"Sections to leave out, a comma list of: {', '.join(SECTIONS)}."),
    precision_steps: Optional[int] = typer.Option(None, "--precision-steps", min=1, help="Training steps of the "
                                                  "precision section's loss curves (default 200; --quick leaves "
                                                  "the section out unless given)."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Also write the tables as a fenced text "
                                            "block to this file (for a markdown page)."),
):
    """Measure training images/s (segcli's train path vs a bare model.fit, beside a PyTorch reference of the
    same nets, eager and compiled), the input pipeline, predict images/s, the peak memory of a tiled predict
    and the matmul peak of this machine, on the Keras backend set (KERAS_BACKEND); and the loss curves of a
    CamVid recipe in float32 and in bf16 (section precision), to check that bf16 costs no accuracy here."""
    import json

    from segcli.bench import run_bench
    from segcli.files import write_json, write_text

    result = run_bench(quick=quick, data=data, models=_bench_list(models), precisions=_bench_list(precisions),
                       steps=steps, jit=jit, predict_batch=predict_batch, skip=_bench_list(skip),
                       precision_steps=precision_steps, batch_size=batch_size, size=size_flag(size),
                       progress=render.bench_progress)
    if json_out == "-":
        typer.echo(json.dumps(result, indent=2))
        return
    render.bench_tables(result)
    if markdown:
        write_text(markdown, render.bench_text(result))
    if json_out:
        write_json(Path(json_out), result)
        render.figures_written(json_out)
