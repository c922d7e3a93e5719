"""Export a trained model to TensorFlow SavedModel, ONNX or TFLite, checked against Keras.

What each format needs, by the Keras backend segcli runs on (segcli.backend): SavedModel and TFLite are
written by TensorFlow, on the tensorflow backend only (on jax or torch, one line names the command to run
instead, or how to install TensorFlow; TensorFlow is never imported there). ONNX is written by tf2onnx on
tensorflow and by torch's own exporter (torch.onnx, the TorchScript exporter Keras' ``model.export`` uses
for dynamic shapes) on torch; not on jax: Keras' jax exporter (jax2onnx 0.17) writes NHWC max-pooling as
an ONNX MaxPool with a 4-D kernel that onnxruntime rejects, so one line names the torch/tensorflow command.
A model trained on any backend is a plain .keras file that any backend loads.

``export_model("model.keras", "onnx")`` loads the model (with its classes), makes a float32 copy if the
file stores a mixed precision policy (saved by plain Keras; segcli saves float32), writes the export beside
a temporary name, runs it on random images and compares the logits with Keras', and only then moves it
into place. A ``classes.json`` (the class map) is written beside an .onnx/.tflite file and inside a
SavedModel folder. ``force`` replaces only an earlier export: a SavedModel folder segcli wrote (it holds a
``.segcli`` marker), or a file of the same format; a user's folder or file is never replaced.

SavedModel and ONNX take any batch, height and width; TFLite takes dynamic height and width where the
converter allows (call ``interpreter.resize_tensor_input`` before ``allocate_tensors``), else a fixed
size. ONNX needs the ``export`` extra: ``pip install 'segcli[export]'`` (tf2onnx, onnx, onnxruntime; torch
needs only onnx and onnxruntime beside it).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import shlex
import shutil
import tempfile
import uuid
import warnings
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

import keras
import numpy as np

from segcli import backend as backends
from segcli.data import ClassMap, load_classes
from segcli.errors import DataError, SegcliError, describe, first_line
from segcli.files import (TMP_TAG, atomic_path, check_replaceable, check_writable_dir, mark_segcli_folder,
                          new_temp_dir, segcli_folder_kind)
from segcli.modelfile import load_model
from segcli.precision import reduced_policy, with_policy
from segcli.sizes import parse_size, round_up

FORMATS = ("savedmodel", "onnx", "tflite")
FORMAT_NAMES = {"savedmodel": "TensorFlow SavedModel", "onnx": "ONNX", "tflite": "TFLite"}
ONNX_PACKAGES = ("tf2onnx", "onnx", "onnxruntime")  # on tensorflow; torch exports with torch.onnx
ONNX_PRODUCERS = ("tf2onnx",)  # an ONNX file tf2onnx wrote may be an earlier export (segcli's before the mark)
ONNX_MARK = "segcli_export"  # metadata every ONNX export of segcli carries: what --force may replace
INSTALL_HINT = backends.install_hint("export")
TF_FORMATS = ("savedmodel", "tflite")  # written by TensorFlow: the tensorflow backend only
ONNX_BACKENDS = ("torch", "tensorflow")  # the backends ONNX is exported from, in the order offered
DEFAULT_OPSET = 17
DEFAULT_TFLITE_SIZE = (360, 480)  # the fallback fixed size, rounded up to the output stride
CHECK_SIZES = ((64, 96), (96, 64))  # verification inputs (rounded up to the output stride)
RTOL = 1e-3  # allowed max abs difference, relative to max(1, largest |logit|)


class ExportError(SegcliError):
    """An export that could not be written or does not reproduce the Keras model's output."""


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

    @property
    def max_abs_diff(self) -> float:
        return max(d for _, d in self.checks)


# --- helpers ----------------------------------------------------------------------------------------

def _round_up_pair(size: tuple[int, int], stride: int) -> tuple[int, int]:
    stride = max(1, int(stride))
    return tuple(round_up(int(v), stride) for v in size)


def missing_onnx_packages(backend: str | None = None) -> list[str]:
    """The packages ONNX export needs on ``backend`` (default: Keras') that are not installed (found, not imported):
    tf2onnx, onnx and onnxruntime on tensorflow; onnx and onnxruntime on torch (torch.onnx is part of torch)."""
    backend = backend or backends.name()
    names = ONNX_PACKAGES if backend == "tensorflow" else tuple(n for n in ONNX_PACKAGES if n != "tf2onnx")
    return [name for name in names if find_spec(name) is None]


def _command_on(backend: str, model_path: Path, fmt: str, out, size, force: bool, opset: int) -> str:
    """The `segcli --backend BACKEND export ...` line that repeats this export's arguments."""
    args = ["segcli", "--backend", backend, "export", str(model_path), "--format", fmt]
    args += ["--out", str(out)] if out is not None else []
    args += ["--size", f"{size[0]}x{size[1]}"] if size is not None else []
    args += ["--opset", str(opset)] if opset != DEFAULT_OPSET else []
    args += ["--force"] if force else []
    return shlex.join(args)


def backend_problem(fmt: str, backend: str, model_path: Path, out=None, size=None, force: bool = False,
                    opset: int = DEFAULT_OPSET) -> str | None:
    """Why ``fmt`` cannot be exported on ``backend`` (one line naming the command or the install), else None.
    Looks for the other backends without importing them."""
    if fmt in TF_FORMATS and backend != "tensorflow":
        if backends.installed("tensorflow"):
            return (f"{FORMAT_NAMES[fmt]} needs the TensorFlow backend (this is {backend}): "
                    f"{_command_on('tensorflow', model_path, fmt, out, size, force, opset)}")
        return (f"{FORMAT_NAMES[fmt]} needs TensorFlow, which is not installed (this is {backend}): "
                f"{backends.install_hint('tensorflow')}")
    if fmt == "onnx" and backend not in ONNX_BACKENDS:
        why = (f"ONNX export is not available on {backend} (Keras' {backend} exporter, jax2onnx, writes max-pooling "
               "that onnxruntime rejects)")
        other = next((b for b in ONNX_BACKENDS if backends.installed(b)), None)
        if other:
            return f"{why}; export from {other}: {_command_on(other, model_path, fmt, out, size, force, opset)}"
        return f"{why}; install torch to export from it: {backends.install_hint('torch')}"
    return None


def default_output(model_path: Path, fmt: str) -> Path:
    if fmt == "savedmodel":
        return model_path.with_name(f"{model_path.stem}_savedmodel")
    return model_path.with_suffix(f".{fmt}")


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif _exists(path):
        path.unlink()


def _random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 255.0, (1, height, width, 3)).astype(np.float32)


def _keras_reference(model: keras.Model, x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():  # a loaded model expects its inputs as a list; one tensor is fine
        warnings.filterwarnings("ignore", message="The structure of `inputs`", category=UserWarning)
        logits = model(x, training=False)
    return np.asarray(keras.ops.convert_to_numpy(logits), dtype=np.float32)


def _compare(fmt: str, model: keras.Model, run, sizes) -> tuple[list, float]:
    """Run the export (``run(x) -> logits``) and Keras on random images; ExportError if they disagree."""
    checks, refs = [], []
    for i, (h, w) in enumerate(sizes):
        x = _random_image(h, w, seed=i)
        ref = _keras_reference(model, x)
        try:
            got = np.asarray(run(x), dtype=np.float32)
        except Exception as exc:
            raise ExportError(f"the {FORMAT_NAMES[fmt]} export fails on a {h}x{w} image: {describe(exc)}") from None
        if got.shape != ref.shape:
            raise ExportError(f"the {FORMAT_NAMES[fmt]} export returns shape {got.shape} for a {h}x{w} image, "
                              f"Keras {ref.shape}")
        diff = float(np.max(np.abs(got - ref))) if got.size else 0.0
        checks.append(((h, w), diff))
        refs.append(float(np.max(np.abs(ref))) if ref.size else 0.0)
    tolerance = RTOL * max([1.0, *refs])
    worst = max(d for _, d in checks)
    if not math.isfinite(worst) or worst > tolerance:
        where = ", ".join(f"{h}x{w}: {d:.3g}" for (h, w), d in checks)
        raise ExportError(f"the {FORMAT_NAMES[fmt]} export does not reproduce the Keras model: max abs difference "
                          f"{where} (tolerance {tolerance:.3g}); nothing was written")
    return checks, tolerance


@contextlib.contextmanager
def _quiet_converters():
    """Keep tf2onnx's and absl's INFO lines and the converters' warnings out of the command's output."""
    loggers = [logging.getLogger(n) for n in ("tf2onnx", "absl", "tensorflow", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def _exact_float32():
    """No TF32 matmuls/convolutions on Ampere+ GPUs while checking: compare true float32 with float32."""
    backend = backends.name()
    if backend == "torch":
        import torch

        previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous
        return
    if backend != "tensorflow":  # nothing is exported on jax (backend_problem)
        yield
        return
    import tensorflow as tf

    previous = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        yield
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(previous)


@contextlib.contextmanager
def _temp_dir_beside(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_temp_dir(path)  # the usual mode, not mkdtemp's 0700
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _move_dir_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` (the caller checked --force) is moved aside first."""
    old = None
    if _exists(out):
        old = out.with_name(f".{out.name}{TMP_TAG}old-{uuid.uuid4().hex[:8]}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        _remove(old)


def _serving_signature(batch=None, size=None):
    import tensorflow as tf

    h, w = size if size is not None else (None, None)
    return [tf.TensorSpec([batch, h, w, 3], tf.float32, name="image")]


def _write_savedmodel(model: keras.Model, path: Path, input_signature=None) -> None:
    with _quiet_converters():
        model.export(str(path), format="tf_saved_model", verbose=False,
                     input_signature=input_signature or _serving_signature())


# --- the three formats ------------------------------------------------------------------------------

def _export_savedmodel(model, out: Path, sizes, classes: ClassMap) -> tuple[list, float]:
    """Write, load and check the SavedModel in a temporary folder, add classes.json and the export marker,
    then rename it into place (an earlier export there is moved aside and removed)."""
    import tensorflow as tf

    with _temp_dir_beside(out) as tmp:
        target = tmp / out.name
        _write_savedmodel(model, target)
        loaded = tf.saved_model.load(str(target))
        serve = loaded.signatures["serving_default"]

        def run(x):
            outputs = serve(image=tf.constant(x))
            return next(iter(outputs.values())).numpy()

        checks, tol = _compare("savedmodel", model, run, sizes)
        del loaded, serve
        classes.save(target / "classes.json")
        mark_segcli_folder(target, "export")
        _move_dir_into_place(target, out)
    return checks, tol


def _onnx_rename(proto, output_name: str = "logits") -> None:
    """Name the output "logits" and the dynamic dimensions batch/height/width."""
    graph = proto.graph
    if len(graph.output) == 1 and graph.output[0].name != output_name:
        old = graph.output[0].name
        for node in graph.node:
            for i, name in enumerate(node.output):
                if name == old:
                    node.output[i] = output_name
            for i, name in enumerate(node.input):
                if name == old:
                    node.input[i] = output_name
        graph.output[0].name = output_name
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        for dim, label in zip(dims, ("batch", "height", "width")):
            if not dim.HasField("dim_value"):
                dim.dim_param = label


def _onnx_proto_tf(model, opset: int):
    import tensorflow as tf
    import tf2onnx

    signature = _serving_signature()
    fn = tf.function(lambda image: model(image, training=False), input_signature=signature)
    with _quiet_converters():
        try:
            proto, _ = tf2onnx.convert.from_function(fn, input_signature=signature, opset=opset)
        except Exception as exc:
            raise ExportError(f"tf2onnx cannot convert the model (opset {opset}): {describe(exc)}") from None
    return proto


def _onnx_proto_torch(model, opset: int, sample_size: tuple[int, int]):
    """torch.onnx's TorchScript exporter, traced on one image of ``sample_size`` with batch, height and width
    dynamic. Keras' own ``model.export(format="onnx")`` calls this exporter too but traces a 1x1 image when
    height and width are None (which a model that pools cannot take), and its dynamo route fixes the shape."""
    import onnx
    import torch

    class _Inference(torch.nn.Module):  # the Keras model (a torch Module) as a submodule: its weights go along
        def __init__(self, wrapped):
            super().__init__()
            self.wrapped = wrapped

        def forward(self, image):
            return self.wrapped(image, training=False)

    module = _Inference(model).eval()
    sample = keras.ops.convert_to_tensor(_random_image(*sample_size))  # on Keras' device
    dims = {0: "batch", 1: "height", 2: "width"}
    buffer = io.BytesIO()
    with _quiet_converters(), torch.no_grad():
        try:
            torch.onnx.export(module, (sample,), buffer, input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": dims, "logits": dims}, opset_version=opset,
                              export_params=True, do_constant_folding=True, dynamo=False)
        except Exception as exc:
            raise ExportError(f"torch.onnx cannot export the model (opset {opset}): {describe(exc)}") from None
    return onnx.load_from_string(buffer.getvalue())


def _export_onnx(model, out: Path, sizes, opset: int) -> tuple[list, float]:
    import onnx
    import onnxruntime as ort

    if backends.name() == "torch":
        proto = _onnx_proto_torch(model, opset, sizes[0])
    else:
        proto = _onnx_proto_tf(model, opset)
    _onnx_rename(proto)
    onnx.helper.set_model_props(proto, {ONNX_MARK: "1"})
    onnx.checker.check_model(proto)
    with atomic_path(out, suffix=".onnx") as tmp:
        onnx.save(proto, str(tmp))
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        checks, tol = _compare("onnx", model, lambda x: session.run(None, {name: x})[0], sizes)
        del session
    return checks, tol


def _tflite_interpreter(path: Path):
    try:  # TensorFlow's tf.lite.Interpreter is deprecated in favour of ai-edge-litert
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Interpreter(model_path=str(path))


def _run_tflite(interpreter, x: np.ndarray) -> np.ndarray:
    inp = interpreter.get_input_details()[0]
    if tuple(inp["shape"]) != x.shape:
        interpreter.resize_tensor_input(inp["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _tflite_bytes(model, size) -> bytes:
    """Convert through a temporary SavedModel (from_concrete_functions leaves Keras 3 variables unread)."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="segcli-tflite-") as tmp:
        saved = Path(tmp) / "savedmodel"
        _write_savedmodel(model, saved, _serving_signature(batch=None if size is None else 1, size=size))
        with _quiet_converters():
            return tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert()


def _write_tflite(model, out: Path, size, sizes) -> tuple[list, float]:
    data = _tflite_bytes(model, size)
    with atomic_path(out, suffix=".tflite") as tmp:
        tmp.write_bytes(data)
        interpreter = _tflite_interpreter(tmp)
        checks, tol = _compare("tflite", model, lambda x: _run_tflite(interpreter, x), sizes)
        del interpreter
    return checks, tol


def _export_tflite(model, out: Path, sizes, size, stride) -> tuple[list, float, tuple | None, list[str]]:
    notes = []
    if size is None:
        try:
            checks, tol = _write_tflite(model, out, None, sizes)
            return checks, tol, None, notes
        except Exception as exc:  # the converter or the interpreter cannot take dynamic height/width
            reason = first_line(exc, type(exc).__name__)
            size = _round_up_pair(DEFAULT_TFLITE_SIZE, stride)
            notes.append(f"TFLite could not take dynamic height/width ({reason}); exported at a fixed "
                         f"{size[0]}x{size[1]} (choose with --size HxW)")
    checks, tol = _write_tflite(model, out, size, [size])
    return checks, tol, size, notes


# --- the command --------------------------------------------------------------------------------------

def _is_export_file(path: Path, fmt: str) -> bool:
    """Whether the file at ``path`` is an ONNX (as tf2onnx or torch.onnx write it) or TFLite model: what --force
    may replace."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    if fmt == "tflite":
        return head[4:8] == b"TFL3"
    if not head.startswith(b"\x08"):  # ModelProto's first field, ir_version
        return False
    try:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    marked = any(p.key == ONNX_MARK for p in proto.metadata_props)
    return (marked or proto.producer_name in ONNX_PRODUCERS) and len(proto.graph.node) > 0


def _check_output(model_path: Path, out: Path, fmt: str, force: bool) -> None:
    """Before any work: the export may replace only an earlier export (with ``force``) and its folder must take
    files; anything else is a one-line error naming the path."""
    if model_path.exists():
        model_real, out_real = model_path.resolve(), out.resolve()
        if model_real == out_real:
            raise SegcliError("the export would replace the model file itself; choose another --out", out)
        if out_real in model_real.parents:
            raise SegcliError(f"holds the model file {model_path}; choose another --out", out)
    if fmt == "savedmodel":
        if out.is_dir() and not out.is_symlink():
            kind = segcli_folder_kind(out)
            if kind not in (None, "export"):
                raise ExportError(f"is a segcli {kind} folder, not an export; --force replaces only an earlier "
                                  "export, choose another --out", out)
        check_replaceable(out, force, what="--out")  # a file, a link, or a folder segcli did not make: refused
    elif _exists(out):
        if out.is_dir():
            raise ExportError(f"is a folder; --out for --format {fmt} is the file to write "
                              f"(e.g. {out / default_output(model_path, fmt).name})", out)
        if not _is_export_file(out, fmt):
            raise ExportError(f"exists and is not a {FORMAT_NAMES[fmt]} export; --force replaces only an earlier "
                              "export of the same format, choose another --out", out)
        if not force:
            raise ExportError("already exists; use --force to replace it", out)
    check_writable_dir(out.parent)


def _check_classes_file(path: Path, classes: ClassMap, force: bool) -> bool:
    """True if classes.json must be written; ExportError if a different one is there and not --force."""
    if not _exists(path):
        return True
    try:
        same = load_classes(path).to_dict() == classes.to_dict()
    except DataError:
        same = False
    if same:
        return False
    if not force:
        raise ExportError("exists with different classes than the model's; use --force to replace it", path)
    return True


def export_model(model_path: str | Path, fmt: str, out: str | Path | None = None, *, force: bool = False,
                 size=None, opset: int = DEFAULT_OPSET) -> ExportResult:
    """Export the .keras model at ``model_path`` to ``fmt`` (savedmodel, onnx or tflite) and check it.

    out: the export path (default: beside the model, ``NAME_savedmodel/``, ``NAME.onnx``, ``NAME.tflite``).
    size: TFLite only: a fixed input size (H, W) or "HxW" instead of dynamic height and width.
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
        raise SegcliError("--size applies to --format tflite only (SavedModel and ONNX take any height and width)")
    model_path = Path(model_path)
    backend = backends.name()
    problem = backend_problem(fmt, backend, model_path, out, size, force, opset)
    if problem:
        raise SegcliError(problem)
    if fmt == "onnx":
        missing = missing_onnx_packages(backend)
        if missing:
            raise SegcliError(f"ONNX export needs {', '.join(missing)}: {INSTALL_HINT}")
    out = Path(out) if out is not None else default_output(model_path, fmt)
    _check_output(model_path, out, fmt, force)
    inside = fmt == "savedmodel"  # a SavedModel folder holds its classes.json; a file has it beside
    classes_path = out / "classes.json" if inside else out.parent / "classes.json"

    loaded = load_model(model_path, precision=None)  # as stored: a mixed-precision file is rebuilt below
    write_classes = True if inside else _check_classes_file(classes_path, loaded.classes, force)
    converted_from = reduced_policy(loaded.model)
    try:
        model = with_policy(loaded.model, "float32")
    except SegcliError as exc:
        raise ExportError(exc.problem, model_path) from None
    stride = loaded.output_stride
    sizes = [_round_up_pair(s, stride) for s in CHECK_SIZES]
    notes: list[str] = []
    fixed = None
    if size is not None and (size[0] % stride or size[1] % stride):
        rounded = _round_up_pair(size, stride)
        notes.append(f"--size {size[0]}x{size[1]} rounded up to {rounded[0]}x{rounded[1]} "
                     f"(a multiple of the output stride {stride})")
        size = rounded
    with _exact_float32():
        if fmt == "savedmodel":
            checks, tol = _export_savedmodel(model, out, sizes, loaded.classes)
        elif fmt == "onnx":
            checks, tol = _export_onnx(model, out, sizes, opset)
        else:
            checks, tol, fixed, more = _export_tflite(model, out, sizes, size, stride)
            notes.extend(more)
    if write_classes and not inside:
        loaded.classes.save(classes_path)
    return ExportResult(format=fmt, path=out, classes_path=classes_path, classes_written=write_classes,
                        checks=checks, tolerance=tol, fixed_size=fixed, converted_from=converted_from,
                        notes=notes)
