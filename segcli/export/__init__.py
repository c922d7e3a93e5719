"""Export a trained model to TensorFlow SavedModel, ONNX, TFLite or OpenVINO IR, checked against Keras.

What each format needs, by the Keras backend segcli runs on (segcli.backend): SavedModel and TFLite are
written by TensorFlow, on the tensorflow backend only, and so is OpenVINO IR, which Keras' exporter converts
from a TensorFlow graph (it needs the ``openvino`` extra); on jax or torch, one line names the command to run
instead, or how to install TensorFlow; TensorFlow is never imported there. ONNX is written by tf2onnx on
tensorflow and by torch's own exporter (torch.onnx, the TorchScript exporter Keras' ``model.export`` uses
for dynamic shapes) on torch; not on jax: Keras' jax exporter (jax2onnx 0.17) writes NHWC max-pooling as
an ONNX MaxPool with a 4-D kernel that onnxruntime rejects, so one line names the torch/tensorflow command.
A model trained on any backend is a plain .keras file that any backend loads.

``export_model("model.keras", "onnx")`` loads the model (with its classes), makes a float32 copy if the
file stores a mixed precision policy (saved by plain Keras; segcli saves float32), writes the export beside
a temporary name, runs it on random images and compares the logits with Keras', and only then moves it
into place. A ``classes.json`` (the class map) is written beside an .onnx/.tflite/.xml file and inside a
SavedModel folder, and so is the .keras file's own record (its classes, output stride and recipe, which predict
and evaluate read with the export: segcli.inference.engines), as NAME.EXT.segcli.json beside a file and
segcli.json inside a SavedModel folder. ``force`` replaces only an earlier export: a SavedModel folder segcli
wrote (it holds a ``.segcli`` marker), or a file of the same format; a user's folder or file is never replaced.

SavedModel, ONNX and OpenVINO IR take any batch, height and width; TFLite takes dynamic height and width where
the converter allows (call ``interpreter.resize_tensor_input`` before ``allocate_tensors``), else a fixed
size. ONNX needs the ``export`` extra: ``pip install 'segcli[export]'`` (tf2onnx, onnx, onnxruntime; torch
needs only onnx and onnxruntime beside it).

The modules: `guards` (before any work: the backend and packages each format needs, what the output may
replace) and `formats` (writing each format and checking it against Keras); `export_model` here runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from segcli import backend as backends
from segcli.errors import SegcliError
from segcli.files import NoSpaceError, check_free_space, remove_stale_temporaries, write_json
from segcli.export.formats import (CHECK_SIZES, DEFAULT_OPSET, FORMAT_NAMES, FORMATS, ExportError, exact_float32,
                                   export_onnx, export_openvino, export_savedmodel, export_tflite, round_up_pair)
from segcli.export.guards import (INSTALL_HINT, backend_problem, check_classes_file, check_output, default_output,
                                  missing_format_packages, missing_onnx_packages)
from segcli.export.int8 import DEFAULT_CALIBRATION, Int8Result, export_openvino_int8
from segcli.inference.engines import meta_path
from segcli.modelfile import file_size_needed, load_model
from segcli.precision import reduced_policy, with_policy
from segcli.sizes import parse_size


@dataclass
class ExportResult:
    format: str
    path: Path
    classes_path: Path
    classes_written: bool  # False: an identical classes.json was already there
    checks: list[tuple[tuple[int, int], float]]  # ((height, width), max abs difference vs Keras)
    tolerance: float
    fixed_size: tuple[int, int] | None = None  # None: any height and width
    converted_from: str | None = None  # the mixed policy the model was rebuilt from, if any
    notes: list[str] = field(default_factory=list)
    int8: Int8Result | None = None  # an INT8 OpenVINO IR: its calibration and its labels against Keras'

    @property
    def max_abs_diff(self) -> float:
        return max(d for _, d in self.checks)


def export_model(model_path: str | Path, fmt: str, out: str | Path | None = None, *, force: bool = False,
                 size=None, opset: int = DEFAULT_OPSET, int8_data: str | Path | None = None,
                 calibration: int | None = None) -> ExportResult:
    """Export the .keras model at ``model_path`` to ``fmt`` (savedmodel, onnx, tflite or openvino) and check it.

    out: the export path (default: beside the model, ``NAME_savedmodel/``, ``NAME.onnx``, ``NAME.tflite``,
    ``NAME.xml`` with its ``NAME.bin``).
    size: TFLite only: a fixed input size (H, W) or "HxW" instead of dynamic height and width.
    int8_data: OpenVINO only: quantise the IR to INT8 (NNCF, the ``int8`` extra), calibrated on ``calibration``
    images (None: DEFAULT_CALIBRATION) spread over this dataset's train split, and compare its labels with
    Keras' on its val images (segcli.export.int8); the default output is then ``NAME-int8.xml``.
    An existing output is replaced only with ``force`` and only when it is an earlier export (a SavedModel
    folder segcli wrote, a file of the same format); a classes.json beside a file export with other classes
    is replaced only with ``force``. A SavedModel folder holds its own classes.json.
    """
    fmt = str(fmt).lower().replace("_", "").replace("-", "")
    if fmt == "tfsavedmodel":
        fmt = "savedmodel"
    if fmt not in FORMATS:
        raise SegcliError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    size = parse_size(size)
    if size is not None and fmt != "tflite":
        raise SegcliError("--size applies to --format tflite only (the other formats take any height and width)")
    int8 = int8_data is not None
    calibration = DEFAULT_CALIBRATION if calibration is None else calibration
    if int8 and fmt != "openvino":
        raise SegcliError("--int8 applies to --format openvino only (NNCF quantises an OpenVINO IR)")
    model_path = Path(model_path)
    backend = backends.name()
    problem = backend_problem(fmt, backend, model_path, out, size, force, opset, int8_data, calibration)
    if problem:
        raise SegcliError(problem)
    missing, install = missing_format_packages(fmt, backend, int8=int8)
    if missing:
        what = "INT8 export" if int8 else f"{FORMAT_NAMES[fmt]} export"
        raise SegcliError(f"{what} needs {', '.join(missing)}: {install}")
    out = Path(out) if out is not None else default_output(model_path, fmt, int8=int8)
    check_output(model_path, out, fmt, force)
    inside = fmt == "savedmodel"  # a SavedModel folder holds its classes.json; a file has it beside
    classes_path = out / "classes.json" if inside else out.parent / "classes.json"

    loaded = load_model(model_path, precision=None)  # as stored: a mixed-precision file is rebuilt below
    write_classes = True if inside else check_classes_file(classes_path, loaded.classes, force)
    remove_stale_temporaries(out, classes_path, meta_path(out, fmt))  # what a killed export of this output left
    converted_from = reduced_policy(loaded.model)
    try:
        model = with_policy(loaded.model, "float32")
    except SegcliError as exc:
        raise ExportError(exc.problem, model_path) from None
    stride = loaded.output_stride
    sizes = [round_up_pair(s, stride) for s in CHECK_SIZES]
    notes: list[str] = []
    fixed, int8_result = None, None
    if size is not None and (size[0] % stride or size[1] % stride):
        rounded = round_up_pair(size, stride)
        notes.append(f"--size {size[0]}x{size[1]} rounded up to {rounded[0]}x{rounded[1]} "
                     f"(a multiple of the output stride {stride})")
        size = rounded
    check_free_space(out, file_size_needed(model))  # before TensorFlow or ONNX write: one line, nothing left
    with exact_float32():
        if fmt == "savedmodel":
            checks, tol = export_savedmodel(model, out, sizes, loaded.classes)
        elif fmt == "onnx":
            checks, tol = export_onnx(model, out, sizes, opset)
        elif fmt == "openvino" and int8:
            checks, tol, int8_result = export_openvino_int8(model, out, sizes, Path(int8_data), calibration, stride,
                                                            loaded.classes)
            notes.extend(filter(None, [int8_result.note()]))
        elif fmt == "openvino":
            checks, tol = export_openvino(model, out, sizes)
        else:
            checks, tol, fixed, more = export_tflite(model, out, sizes, size, stride)
            notes.extend(more)
    record = meta_path(out, fmt)  # the .keras file's record, which predict and evaluate read with the export
    try:
        quantised = {"quantization": int8_result.record()} if int8_result else {}
        write_json(record, {**loaded.meta, "classes": loaded.classes.to_dict(), "output_stride": stride, **quantised})
        if write_classes and not inside:
            loaded.classes.save(classes_path)
    except NoSpaceError:  # an export without its classes is a partial output: none is left
        if not inside:
            for path in (out, out.with_suffix(".bin") if fmt == "openvino" else None, record):
                if path is not None:
                    path.unlink(missing_ok=True)
        raise
    return ExportResult(format=fmt, path=out, classes_path=classes_path, classes_written=write_classes,
                        checks=checks, tolerance=tol, fixed_size=fixed, converted_from=converted_from,
                        notes=notes, int8=int8_result)


__all__ = ["export_model", "ExportResult", "Int8Result", "DEFAULT_CALIBRATION", "ExportError", "FORMATS",
           "FORMAT_NAMES", "DEFAULT_OPSET", "INSTALL_HINT", "backend_problem", "default_output",
           "missing_onnx_packages"]
