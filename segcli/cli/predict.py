"""segcli predict: masks for images of any size; segcli overlay: a mask drawn over its image."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from segcli.cli import render
from segcli.cli.options import ENGINE_HELP, RUN_PRECISION_HELP, TTA_HELP
from segcli.errors import SegcliError


def predict_cmd(
    model: Path = typer.Argument(..., help="A .keras model file written by `segcli train`, or its export "
                                 "(.onnx, .xml, .tflite, a SavedModel folder; see segcli export)."),
    inputs: Optional[List[str]] = typer.Argument(None, metavar="INPUT...",
                                                 help="Image files, folders of images or glob patterns; or video "
                                                 "files and stream URLs (rtsp://, http://, ...)."),
    out: Path = typer.Option(Path("predictions"), "--out", help="Output folder (earlier masks there are replaced; "
                             "it may not be a folder of the inputs)."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Equal-size images (or tiles) per model call."),
    overlay: bool = typer.Option(False, "--overlay", help="Also write <name>_overlay.png (mask blended, legend)."),
    alpha: float = typer.Option(0.5, "--alpha", min=0.0, max=1.0, help="Mask opacity in overlays."),
    probabilities: bool = typer.Option(False, "--probabilities",
                                       help="Also write <name>_probs.npy: float16 (H, W, classes) softmax."),
    tile: int = typer.Option(1024, "--tile", min=1, help="Images with a side past this run in overlapping tiles."),
    overlap: int = typer.Option(128, "--overlap", min=0, help="Overlap of neighbouring tiles in pixels."),
    precision: str = typer.Option("auto", "--precision", help=RUN_PRECISION_HELP),
    tta: Optional[str] = typer.Option(None, "--tta", help=TTA_HELP),
    engine: Optional[str] = typer.Option(None, "--engine", help=ENGINE_HELP),
    source: Optional[str] = typer.Option(None, "--source", help="A camera's device index (0) or a stream URL; "
                                         "videos write OUT/NAME_overlay.mp4 at the source's size and frame rate."),
    masks: bool = typer.Option(False, "--masks", help="Videos: also write a palette PNG mask per frame, "
                               "OUT/NAME/000001.png on."),
):
    """Predict a palette PNG mask (the input's size, the model's class colours) for every input image, or an
    overlay video for every video, camera or stream (Ctrl-C closes the video so far)."""
    from segcli.inference import predict_files
    from segcli.inference.video import VideoInterrupted, predict_videos, video_sources

    if not inputs and source is None:
        raise SegcliError("missing INPUT... (images, folders, globs, videos, stream URLs) or --source")
    videos = video_sources(inputs or [], source)  # None: images
    if videos is not None:
        if probabilities:
            raise SegcliError("--probabilities is for images; a video gets its overlay video (and --masks)")
        try:
            with render.RichProgress(render.err_console) as progress:
                results = predict_videos(model, videos, out, precision=precision, masks=masks, alpha=alpha,
                                         tile=tile, overlap=overlap, batch_size=batch_size, tta=tta,
                                         progress=progress, engine=engine)
        except VideoInterrupted as exc:
            render.videos_written(exc.results)
            render.interrupted()
            raise typer.Exit(130)
        render.videos_written(results)
        return

    with render.RichProgress(render.err_console) as progress:
        # a bad --tta, a missing input or a bad --out fails there before the model loads
        records = predict_files(model, inputs or [], out, precision=precision, overlay=overlay, alpha=alpha,
                                probabilities=probabilities, tile=tile, overlap=overlap, batch_size=batch_size,
                                tta=tta, progress=progress, engine=engine)
    render.predictions_written(len(records), out, overlay=overlay, probabilities=probabilities)


def overlay_cmd(
    image: Path = typer.Argument(..., help="The image."),
    mask: Path = typer.Argument(..., help="Its label PNG (palette, index or colour mask)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output PNG, or an existing folder to write it in "
                                       "(default: ./IMAGE_overlay.png or _panel.png)."),
    alpha: float = typer.Option(0.5, "--alpha", min=0.0, max=1.0, help="Mask opacity."),
    panel: bool = typer.Option(False, "--panel", help="image | coloured mask | overlay side by side."),
    classes: Optional[Path] = typer.Option(None, "--classes",
                                           help="classes.json (default: beside the mask or its dataset, "
                                                "else classes inferred from the mask)."),
):
    """Draw MASK over IMAGE with a legend of the classes present."""
    from segcli.overlay import overlay_files

    written = overlay_files(image, mask, out, alpha=alpha, panel=panel, classes_file=classes)
    render.overlay_written(written)
