"""`predict_files`: image files in, mask files out, the file-level side of `segcli predict`.

It owns predict's checks, once: the inputs resolved and `--out` checked (`check_predict_out`) before the model
loads, then the model loaded, then the outputs written; the forward passes are segcli.inference's."""

from __future__ import annotations

import os
from pathlib import Path

from segcli.errors import DataError, SegcliError
from segcli.files import (MARKER_NAME, check_writable_dir, ensure_writable_dir, exists_or_link, guard_output,
                          missing_folders, remove_dead_writers_temp_files, remove_empty_folders)
from segcli.inference.arrays import iter_predictions
from segcli.inference.sources import read_images, resolve_inputs
from segcli.inference.tta import TTA, parse_tta
from segcli.inference.writers import Prediction, PredictionWriter, output_names, record_outputs, written_by_predict
from segcli.progress import NullProgress, Progress


def check_predict_out(files: list[Path], out_dir: str | Path, *, overlay: bool = False,
                      probabilities: bool = False) -> Path:
    """Refuse, before any model runs, an `out_dir` that holds input images (an input folder, or the folder of
    an input file), an output that would replace an input (through a link, too), two inputs with one output
    name, and an `out_dir` that cannot take files (a file in the way, no permission). Creates nothing."""
    out_dir = Path(out_dir)
    real_out = os.path.realpath(out_dir)
    inputs = {os.path.realpath(p): Path(p) for p in files}
    for real, path in inputs.items():
        if real_out in (os.path.dirname(real), os.path.realpath(os.path.dirname(os.path.abspath(path)))):
            raise SegcliError(f"--out is the folder of the input image {path.name}: the masks would be written "
                              "among the inputs; choose another --out", out_dir)
    stats = {}
    for real, path in inputs.items():
        try:
            st = os.stat(real)
            stats[(st.st_dev, st.st_ino)] = path
        except OSError:
            pass
    ours = written_by_predict(out_dir)  # what an earlier `segcli predict` wrote there may be replaced
    by_name: dict[str, Path] = {}
    for path in files:
        for name in output_names(path.stem, overlay=overlay, probabilities=probabilities):
            if name in by_name:
                raise DataError(f"same output name as {by_name[name]} ({name}): predict them separately or "
                                "rename one", path)
            by_name[name] = path
            target = out_dir / name
            real = os.path.realpath(target)
            try:
                st = os.stat(target)
                same = stats.get((st.st_dev, st.st_ino))
            except OSError:
                same = None
            if real in inputs or same is not None:
                raise SegcliError(f"--out would overwrite the input {same or inputs[real]} with {name}; "
                                  "choose another --out", out_dir)
            if name not in ours and exists_or_link(target):
                raise SegcliError(f"{name} exists in --out and segcli predict did not write it; choose another "
                                  "--out", out_dir)
    guard_output(out_dir, files)  # the one guard of every writer: links followed
    return check_writable_dir(out_dir)


def predict_files(model, inputs, out_dir: str | Path = "predictions", *, precision: str | None = "auto",
                  overlay: bool = False, alpha: float = 0.5, probabilities: bool = False, tile: int = 1024,
                  overlap: int = 128, batch_size: int = 4, tta: str | TTA | None = None,
                  progress: Progress | None = None, engine: str | None = None) -> list[Prediction]:
    """Predict a mask for every input image and write, per image, into `out_dir`:

    `<stem>.png` (palette PNG in the model's class colours, the input's H x W), with `overlay`
    `<stem>_overlay.png` (blend + legend), with `probabilities` `<stem>_probs.npy` (float16 (H, W, K)).
    Every file is written to a temporary name and renamed, so a failure leaves no half-written output.
    `model`: a .keras file or an export (.onnx, .xml, .tflite, a SavedModel folder), loaded at `precision` by
    segcli.inference.engines.load_predictor (with `engine`, where a file has a choice) once every check has passed;
    or a segcli.modelfile.LoadedModel (`precision` and `engine` are then not used).
    `inputs`: image files, folders and glob patterns (`resolve_inputs`).
    Checked first, before the model loads or anything is written: `tta`, `alpha`, `batch_size`, the inputs and
    `out_dir` (`check_predict_out`: it may not hold the inputs or overwrite one).
    `progress` (segcli.progress) gets a task "predict", advanced after each image with the image's name.
    `tta` (`parse_tta`: "flip", "flip,0.75,1.25", ...): masks and probabilities from the mean softmax
    probabilities over its passes (one forward pass per flip and scale).
    """
    tta = parse_tta(tta)  # a bad spec fails before anything is read or written
    if not 0.0 <= alpha <= 1.0:
        raise SegcliError(f"alpha must be in 0..1, got {alpha}")
    if batch_size < 1:
        raise SegcliError(f"batch size must be >= 1, got {batch_size}")
    files = resolve_inputs(inputs)
    out_dir = check_predict_out(files, out_dir, overlay=overlay, probabilities=probabilities)
    if isinstance(model, (str, os.PathLike)):
        from segcli.inference.engines import load_predictor  # Keras or an engine: only now, after the checks

        model = load_predictor(model, precision, engine)
    made = missing_folders(out_dir)
    ensure_writable_dir(out_dir)
    remove_dead_writers_temp_files(out_dir)  # what a killed predict left (only segcli's temporaries)
    writer = PredictionWriter(out_dir, model.classes, overlay=overlay, alpha=alpha, probabilities=probabilities)
    records: list[Prediction] = []
    progress = progress or NullProgress()
    progress.start("predict", len(files))
    done = False
    try:
        record_outputs(out_dir, [name for path in files
                                 for name in output_names(path.stem, overlay=overlay, probabilities=probabilities)])
        for path, image, labels, _ in iter_predictions(
                model.model, read_images(files), stride=model.output_stride, tile=tile, overlap=overlap,
                batch_size=batch_size, probs_out=writer.probs_target if probabilities else None, tta=tta):
            records.append(writer.write(path, image, labels))
            progress.advance("predict", len(records), info=path.name)
        done = True
    finally:
        progress.end("predict")
        writer.discard()
        if not done and made:
            _take_back(out_dir, made)
    return records


def _take_back(out_dir: Path, made: list[Path]) -> None:
    """After a failed predict (a full disk), remove the --out folder it made when the folder holds only its mark."""
    try:
        if {p.name for p in out_dir.iterdir()} == {MARKER_NAME}:
            (out_dir / MARKER_NAME).unlink()
    except OSError:
        return
    remove_empty_folders(made)


__all__ = ["predict_files", "check_predict_out"]
