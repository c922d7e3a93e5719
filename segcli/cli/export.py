"""segcli export: SavedModel / ONNX / TFLite / OpenVINO IR, checked against Keras."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from segcli.cli import render


def export_cmd(
    model: Path = typer.Argument(..., help="A .keras model file (e.g. runs/NAME/best.keras)."),
    fmt: str = typer.Option(..., "--format", "-f", help="savedmodel | onnx | tflite | openvino"),
    out: Optional[Path] = typer.Option(None, "--out", help="Output path (default: beside MODEL: "
                                       "NAME_savedmodel/, NAME.onnx, NAME.tflite, NAME.xml + NAME.bin)."),
    size: Optional[str] = typer.Option(None, "--size", help="TFLite only: a fixed input HxW instead of dynamic "
                                       "height/width (rounded up to the output stride)."),
    opset: int = typer.Option(17, "--opset", min=7, help="ONNX opset."),
    int8: bool = typer.Option(False, "--int8", help="OpenVINO only: quantise to INT8 with NNCF, calibrated on "
                              "--data's train images; labels are checked against Keras on its val images "
                              "(default output NAME-int8.xml; needs the int8 extra)."),
    data: Optional[Path] = typer.Option(None, "--data", help="With --int8: the dataset to calibrate on (a folder "
                                        "or dataset file, as segcli train takes)."),
    calibration: Optional[int] = typer.Option(None, "--calibration", min=1,
                                              help="With --int8: how many train images calibrate, spread over the "
                                              "split (default 300: segcli.export.int8.DEFAULT_CALIBRATION)."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier export (a SavedModel folder segcli "
                               "wrote, a file of the same format; nothing else) and a different classes.json."),
):
    """Export MODEL as a float32 SavedModel, ONNX, TFLite or OpenVINO IR, with classes.json beside it (inside a
    SavedModel), or as an INT8 OpenVINO IR (--int8 --data DATA). segcli predict, evaluate and bench run each
    export (see docs/deploy.md).

    Each export is run on random images right after writing and compared with Keras (max abs difference).

    SavedModel, TFLite and OpenVINO need the tensorflow backend; ONNX works on tensorflow and torch, not on jax.

    A .keras model from any backend exports from any of them: segcli --backend NAME export ...

    ONNX needs the export extra: pip install 'segcli\\[export]'; OpenVINO the openvino extra, and --int8 the int8
    extra (NNCF).
    """
    from segcli.export import export_model

    if int8 and data is None:
        raise typer.BadParameter("--int8 needs --data DATA: the dataset whose train images calibrate it",
                                 param_hint="--data")
    if not int8 and (data is not None or calibration is not None):
        raise typer.BadParameter("applies with --int8 only", param_hint="--data" if data is not None else
                                 "--calibration")
    result = export_model(model, fmt, out, force=force, size=size, opset=opset, int8_data=data if int8 else None,
                          calibration=calibration)
    render.export_result(result, model, opset)
