"""Writing each export format and checking it against Keras: a SavedModel folder (TensorFlow), an ONNX file
(tf2onnx on tensorflow, torch.onnx on torch), a TFLite file (TensorFlow's converter) or an OpenVINO IR (Keras'
exporter, through TensorFlow). Each is written beside
a temporary name, run on random images, its logits compared with Keras' (`RTOL`), and only then moved into
place; an export that disagrees raises `ExportError` and leaves nothing. Which backend may write which format,
and what the output may replace, is checked before any of this (segcli.export.guards).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import shutil
import warnings
from pathlib import Path

import keras
import numpy as np

from segcli import backend as backends
from segcli.data import ClassMap
from segcli.errors import SegcliError, describe, first_line
from segcli.files import (NoSpaceError, atomic_path, exists_or_link, mark_segcli_folder, move_aside, new_temp_dir,
                          no_space_errors)
from segcli.inference.engines import OpenVinoEngine, TfliteEngine
from segcli.sizes import round_up

FORMATS = ("savedmodel", "onnx", "tflite", "openvino")
FORMAT_NAMES = {"savedmodel": "TensorFlow SavedModel", "onnx": "ONNX", "tflite": "TFLite", "openvino": "OpenVINO IR"}
SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite", "openvino": ".xml"}  # a SavedModel is a folder
ONNX_PRODUCERS = ("tf2onnx",)  # an ONNX file tf2onnx wrote may be an earlier export (segcli's before the mark)
ONNX_MARK = "segcli_export"  # metadata every ONNX export of segcli carries: what --force may replace
DEFAULT_OPSET = 17
DEFAULT_TFLITE_SIZE = (360, 480)  # the fallback fixed size, rounded up to the output stride
CHECK_SIZES = ((64, 96), (96, 64))  # verification inputs (rounded up to the output stride)
RTOL = 1e-3  # allowed max abs difference, relative to max(1, largest |logit|)


class ExportError(SegcliError):
    """An export that could not be written or does not reproduce the Keras model's output."""


def round_up_pair(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """(height, width), each rounded up to a multiple of the output stride."""
    stride = max(1, int(stride))
    return tuple(round_up(int(v), stride) for v in size)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif exists_or_link(path):
        path.unlink()


def _random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 255.0, (1, height, width, 3)).astype(np.float32)


def keras_reference(model: keras.Model, x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():  # a loaded model expects its inputs as a list; one tensor is fine
        warnings.filterwarnings("ignore", message="The structure of `inputs`", category=UserWarning)
        logits = model(x, training=False)
    return np.asarray(keras.ops.convert_to_numpy(logits), dtype=np.float32)


def _compare(fmt: str, model: keras.Model, run, sizes) -> tuple[list, float]:
    """Run the export (``run(x) -> logits``) and Keras on random images; ExportError if they disagree."""
    checks, refs = [], []
    for i, (h, w) in enumerate(sizes):
        x = _random_image(h, w, seed=i)
        ref = keras_reference(model, x)
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
def quiet_converters():
    """Keep tf2onnx's, absl's and NNCF's INFO lines, NNCF's progress bars (rich, on stdout) and the converters'
    warnings out of the command's output."""
    loggers = [logging.getLogger(n) for n in ("tf2onnx", "absl", "tensorflow", "torch.onnx", "nncf")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def exact_float32():
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
def temp_dir_beside(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_temp_dir(path)  # the usual mode, not mkdtemp's 0700
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _move_dir_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` (the caller checked --force) is moved aside first."""
    old = move_aside(out) if exists_or_link(out) else None  # a temporary's name: a kill leaves it to be swept
    os.replace(tmp, out)
    if old is not None:
        _remove(old)


def _serving_signature(batch=None, size=None):
    import tensorflow as tf

    h, w = size if size is not None else (None, None)
    return [tf.TensorSpec([batch, h, w, 3], tf.float32, name="image")]


def _write_savedmodel(model: keras.Model, path: Path, input_signature=None) -> None:
    with quiet_converters():
        model.export(str(path), format="tf_saved_model", verbose=False,
                     input_signature=input_signature or _serving_signature())


# --- the three formats ------------------------------------------------------------------------------

def export_savedmodel(model, out: Path, sizes, classes: ClassMap) -> tuple[list, float]:
    """Write, load and check the SavedModel in a temporary folder, add classes.json and the export marker,
    then rename it into place (an earlier export there is moved aside and removed)."""
    import tensorflow as tf

    with no_space_errors(out), temp_dir_beside(out) as tmp:  # TensorFlow's full disk: one line naming out
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
    with quiet_converters():
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
    with quiet_converters(), torch.no_grad():
        try:
            torch.onnx.export(module, (sample,), buffer, input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": dims, "logits": dims}, opset_version=opset,
                              export_params=True, do_constant_folding=True, dynamo=False)
        except Exception as exc:
            raise ExportError(f"torch.onnx cannot export the model (opset {opset}): {describe(exc)}") from None
    return onnx.load_from_string(buffer.getvalue())


def export_onnx(model, out: Path, sizes, opset: int) -> tuple[list, float]:
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


def _tflite_bytes(model, size, scratch: Path) -> bytes:
    """Convert through a temporary SavedModel in ``scratch`` (from_concrete_functions leaves Keras 3 variables
    unread)."""
    import tensorflow as tf

    saved = scratch / "savedmodel"
    _write_savedmodel(model, saved, _serving_signature(batch=None if size is None else 1, size=size))
    with quiet_converters():
        return tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert()


def _write_tflite(model, out: Path, size, sizes) -> tuple[list, float]:
    # beside the output: a killed export's is swept by the next one; a full disk is one line naming out
    with no_space_errors(out), temp_dir_beside(out) as scratch:
        data = _tflite_bytes(model, size, scratch)
    with atomic_path(out, suffix=".tflite") as tmp:
        tmp.write_bytes(data)
        engine = TfliteEngine(tmp)  # as predict runs it: LiteRT where installed, else tf.lite
        checks, tol = _compare("tflite", model, engine.run_batch, sizes)
        del engine
    return checks, tol


def export_tflite(model, out: Path, sizes, size, stride) -> tuple[list, float, tuple | None, list[str]]:
    notes = []
    if size is None:
        try:
            checks, tol = _write_tflite(model, out, None, sizes)
            return checks, tol, None, notes
        except NoSpaceError:
            raise
        except Exception as exc:  # the converter or the interpreter cannot take dynamic height/width
            reason = first_line(exc, type(exc).__name__)
            size = round_up_pair(DEFAULT_TFLITE_SIZE, stride)
            notes.append(f"TFLite could not take dynamic height/width ({reason}); exported at a fixed "
                         f"{size[0]}x{size[1]} (choose with --size HxW)")
    checks, tol = _write_tflite(model, out, size, [size])
    return checks, tol, size, notes


def export_openvino(model, out: Path, sizes) -> tuple[list, float]:
    """Keras' own exporter (``model.export(format="openvino")``, through a TensorFlow graph) writes NAME.xml and
    NAME.bin in a temporary folder beside ``out``; OpenVINO runs them in float32 (as predict does), and they are
    moved into place, the .bin first (the .xml names it)."""
    with no_space_errors(out), temp_dir_beside(out) as tmp:
        target = tmp / out.name
        with quiet_converters():
            try:
                model.export(str(target), format="openvino", verbose=False, input_signature=_serving_signature())
            except Exception as exc:
                raise ExportError(f"Keras cannot export the model to OpenVINO: {describe(exc)}") from None
        engine = OpenVinoEngine(target, "float32")
        checks, tol = _compare("openvino", model, engine.run_batch, sizes)
        del engine
        move_ir_into_place(target, out)
    return checks, tol


def move_ir_into_place(target: Path, out: Path) -> None:
    """An IR written at `target` (.xml + .bin) moved to `out`, the .bin first (the .xml names it)."""
    os.replace(target.with_suffix(".bin"), out.with_suffix(".bin"))
    os.replace(target, out)
