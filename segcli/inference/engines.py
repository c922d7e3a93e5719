"""Exported models as predictors: an engine runs an export (ONNX, OpenVINO IR, TFLite, SavedModel) where the
.keras model ran, with the same input and output.

An engine takes what the Keras model takes, float32 (B, h, w, 3) RGB in 0..255 (the model normalises inside),
and returns float32 (B, h, w, K) logits (`Engine.run_batch`); segcli.inference.arrays pads, tiles and batches for
it as for Keras (its `forward` calls `run_batch`). `load_predictor` opens any model file as a
segcli.modelfile.LoadedModel, so `predict_files`, `evaluate` and `bench` take them all:

- `.keras`: Keras (segcli.modelfile.load_model), on the Keras backend;
- `.onnx`: ONNX Runtime (the `export` extra), or OpenVINO (`--engine openvino`: it reads ONNX too);
- `.xml`: OpenVINO IR (the `openvino` extra);
- `.tflite`: the LiteRT interpreter (`ai_edge_litert`, the `litert` extra), else TensorFlow's tf.lite.Interpreter;
- a SavedModel folder: tf.saved_model.load (TensorFlow; any Keras backend).

segcli export writes the .keras file's own record (its segcli.json: classes, output stride, recipe, the dataset's
classes, which evaluate reads) beside the export as NAME.EXT.segcli.json (inside a SavedModel folder: segcli.json),
and classes.json beside it. Without the record, the classes come from classes.json (else default names) and the
output stride (what the input is padded to) is found by running the engine on small odd multiples of 1, 2, 4, ...
64 (the smallest from which on each comes back at its input size). An
export with a fixed input size (a TFLite exported with --size) takes any image: a smaller one is padded (reflected,
as arrays pads) to its size and cropped back, a larger one runs in overlapping windows of its size, each output
pixel from the window whose centre holds it.
Exported engines compute in float32; OpenVINO follows --precision as Keras does (auto: bf16 on a CPU with native
bf16), so `--precision float32` gives the masks of a float32 Keras model.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from segcli.errors import ModelError, SegcliError, first_line
from segcli.inference.arrays import axis_tiles

# engine -> (what it is called, the import that runs it, the extra that installs it)
ENGINES = {
    "keras": ("Keras", "keras", "tensorflow"),
    "onnxruntime": ("ONNX Runtime", "onnxruntime", "export"),
    "openvino": ("OpenVINO", "openvino", "openvino"),
    "tflite": ("TFLite", "ai_edge_litert", "litert"),
    "savedmodel": ("TensorFlow SavedModel", "tensorflow", "tensorflow"),
}
# a model file's kind -> the engines that run it, the default first
RUNS = {"keras": ("keras",), "onnx": ("onnxruntime", "openvino"), "openvino": ("openvino",),
        "tflite": ("tflite",), "savedmodel": ("savedmodel",)}
SUFFIXES = {".keras": "keras", ".onnx": "onnx", ".xml": "openvino", ".tflite": "tflite"}
STRIDES = (1, 2, 4, 8, 16, 32, 64)  # the output strides tried on an export, smallest first
OPENVINO_PRECISION = {"float32": "f32", "mixed_bfloat16": "bf16", "mixed_float16": "f16"}


def install_line(engine: str) -> str:
    name, _, extra = ENGINES[engine]
    return f'{name} is not installed: pip install "segcli[{extra}]"'


def model_kind(path: str | Path) -> str:
    """keras, onnx, openvino, tflite or savedmodel, from the path (a SavedModel is a folder with saved_model.pb);
    ModelError naming the path for anything else."""
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "savedmodel"
        raise ModelError("is a folder but not a SavedModel (no saved_model.pb)", path)
    if not path.exists():
        raise ModelError("no such model file", path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ModelError(f"not a model segcli runs (expected {', '.join(SUFFIXES)} or a SavedModel folder)", path)
    return kind


def choose_engine(path: str | Path, engine: str | None = None) -> str:
    """The engine for the model at `path`: `engine` when given and it runs that kind of file, else the default."""
    kind = model_kind(path)
    if engine is None or engine == "auto":
        return RUNS[kind][0]
    if engine not in ENGINES:
        raise SegcliError(f"--engine {engine!r}: expected auto, {', '.join(ENGINES)}")
    if engine not in RUNS[kind]:
        raise SegcliError(f"--engine {engine} does not run a {kind} model; it runs with {', '.join(RUNS[kind])}",
                          path)
    return engine


def installed(engine: str) -> bool:
    """Whether `engine`'s package is there (found, not imported); TFLite runs on TensorFlow too."""
    if engine == "tflite":
        return find_spec("ai_edge_litert") is not None or find_spec("tensorflow") is not None
    return find_spec(ENGINES[engine][1]) is not None


@contextlib.contextmanager
def _fd2_muted():
    """fd 2 to /dev/null meanwhile: the runtimes' C++ sides print their own lines there (LiteRT's "INFO: Created
    TensorFlow Lite XNNPACK delegate for CPU.", a failed probe's kernel error), below any log level."""
    try:
        sys.stderr.flush()
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError, AttributeError):
        yield
        return
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _require(engine: str) -> None:
    if not installed(engine):
        raise SegcliError(install_line(engine))


# --- engines ------------------------------------------------------------------------------------------

class Engine:
    """An export that runs: `run_batch` float32 (B, h, w, 3) 0..255 -> float32 (B, h, w, K) logits."""

    name = "engine"
    runtime = ""  # what runs it, in words (the package and its version)

    def __init__(self, path: Path, fixed_size: tuple[int, int] | None, fixed_batch: bool):
        self.path = path
        self.fixed_size = fixed_size  # (H, W) of an export that takes one size only, else None
        self.fixed_batch = fixed_batch  # the export takes one image per call
        self.num_classes = 0

    @property
    def output_shape(self) -> tuple:
        """As a Keras model's: segcli.inference.arrays reads the number of classes from it."""
        return (None, None, None, self.num_classes)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def reset(self) -> None:
        """After a failed run (`find_stride`'s probes): make the engine usable again."""

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.fixed_size is not None and batch.shape[1:3] != self.fixed_size:
            return np.stack([_fit_to_size(self._call, image, self.fixed_size) for image in batch])
        return self._call(batch)

    def _call(self, batch: np.ndarray) -> np.ndarray:
        if self.fixed_batch and len(batch) != 1:
            return np.concatenate([self._run(batch[i:i + 1]) for i in range(len(batch))])
        return np.asarray(self._run(batch), dtype=np.float32)


def _fit_to_size(call, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w, K) logits of one image through an export that takes only (H, W) = size: padded (reflected) up to it
    along a shorter side, in overlapping windows along a longer one."""
    h, w = image.shape[:2]
    big_h, big_w = max(h, size[0]), max(w, size[1])
    padded = np.pad(image, ((0, big_h - h), (0, big_w - w), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")
    out = None
    for y0, _, cy0, cy1 in axis_tiles(big_h, size[0], size[0] // 4):  # windows a quarter overlapping
        for x0, _, cx0, cx1 in axis_tiles(big_w, size[1], size[1] // 4):
            logits = call(padded[None, y0:y0 + size[0], x0:x0 + size[1]])[0]
            if out is None:
                out = np.empty((big_h, big_w, logits.shape[-1]), np.float32)
            out[cy0:cy1, cx0:cx1] = logits[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    return out[:h, :w]


def _static(dims) -> tuple[tuple[int, int] | None, bool]:
    """(fixed (H, W) or None, fixed batch of 1) from an input's (B, H, W, 3) dims (None/-1/0 or a str: dynamic)."""
    def known(d):
        return isinstance(d, (int, np.integer)) and d > 0
    fixed = (int(dims[1]), int(dims[2])) if known(dims[1]) and known(dims[2]) else None
    return fixed, known(dims[0]) and int(dims[0]) == 1


class OnnxEngine(Engine):
    name = "onnxruntime"

    def __init__(self, path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 4  # fatal only: a failed run is an exception, not lines on the terminal
        # its threads wait without spinning between runs: spinning took the cores from whatever else runs
        # (another process, the thread decoding the next images)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        super().__init__(path, *_static(inp.shape))
        self.runtime = f"onnxruntime {ort.__version__}"

    def _run(self, batch):
        return self.session.run(None, {self.input_name: batch})[0]


class OpenVinoEngine(Engine):
    name = "openvino"

    def __init__(self, path: Path, precision: str = "float32"):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(path))
        dims = [d.get_length() if d.is_static else None for d in model.inputs[0].get_partial_shape()]
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": OPENVINO_PRECISION.get(precision, "f32")}
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        super().__init__(path, *_static(dims))
        self.precision = precision
        self.runtime = f"openvino {ov.__version__}"

    def _run(self, batch):
        self.request.infer({0: batch})
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32)  # a copy: the buffer is reused


class TfliteEngine(Engine):
    name = "tflite"

    def __init__(self, path: Path):
        try:  # TensorFlow's tf.lite.Interpreter is deprecated in favour of LiteRT's
            from ai_edge_litert.interpreter import Interpreter
            self.runtime = "LiteRT (ai_edge_litert)"
        except ImportError:
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
            self.runtime = f"tf.lite.Interpreter (TensorFlow {tf.__version__})"
        self.make = lambda: Interpreter(model_path=str(path), num_threads=os.cpu_count() or 1)
        self.reset()
        inp = self.interpreter.get_input_details()[0]
        self.index = inp["index"]
        dims = [None if s < 0 else int(s) for s in inp.get("shape_signature", inp["shape"])]
        super().__init__(path, *_static(dims))

    def reset(self):
        """A new interpreter: one whose run failed may not run again."""
        with warnings.catch_warnings(), _fd2_muted():
            warnings.simplefilter("ignore")
            self.interpreter = self.make()
        self.shape = None

    def _run(self, batch):
        if self.shape != batch.shape:
            with _fd2_muted():
                self.interpreter.resize_tensor_input(self.index, list(batch.shape))
                self.interpreter.allocate_tensors()
            self.shape = batch.shape
        self.interpreter.set_tensor(self.index, batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.interpreter.get_output_details()[0]["index"])


class SavedModelEngine(Engine):
    name = "savedmodel"

    def __init__(self, path: Path):
        import tensorflow as tf  # a SavedModel is run by TensorFlow, whatever Keras' backend

        self.tf = tf
        self.serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        name, spec = next(iter(self.serve.structured_input_signature[1].items()))
        self.input_name = name
        super().__init__(path, *_static(spec.shape.as_list()))
        self.runtime = f"TensorFlow {tf.__version__}"

    def _run(self, batch):
        outputs = self.serve(**{self.input_name: self.tf.constant(batch)})
        return next(iter(outputs.values())).numpy()


def open_engine(path: str | Path, engine: str | None = None, precision: str = "float32") -> Engine:
    """The engine that runs the export at `path` (`choose_engine`), with its number of classes found by one run;
    one line naming the extra to install when its package is missing, or naming the file when it cannot load."""
    path = Path(path)
    engine = choose_engine(path, engine)
    if engine == "keras":
        raise SegcliError("a .keras model is loaded by segcli.modelfile.load_model, not an engine", path)
    _require(engine)
    try:
        with warnings.catch_warnings(), _fd2_muted():
            warnings.simplefilter("ignore")
            if engine == "onnxruntime":
                runner = OnnxEngine(path)
            elif engine == "openvino":
                runner = OpenVinoEngine(path, precision)
            elif engine == "tflite":
                runner = TfliteEngine(path)
            else:
                runner = SavedModelEngine(path)
    except SegcliError:
        raise
    except Exception as exc:  # each runtime raises its own types for a damaged or foreign file
        raise ModelError(f"{ENGINES[engine][0]} cannot load it: {first_line(exc, type(exc).__name__)}",
                         path) from None
    probe = runner.fixed_size or (32, 32)
    try:
        runner.num_classes = int(runner._call(np.zeros((1, *probe, 3), np.float32)).shape[-1])
    except Exception as exc:
        raise ModelError(f"{ENGINES[engine][0]} cannot run it on a {probe[0]}x{probe[1]} image: "
                         f"{first_line(exc, type(exc).__name__)}", path) from None
    return runner


def find_stride(runner: Engine) -> int:
    """The smallest of STRIDES at which the export gives back its input size, and at every larger one (a
    fixed-size export: 1, it pads itself); ModelError when none does."""
    if runner.fixed_size is not None:
        return 1
    found = None
    for stride in reversed(STRIDES):  # a stride that works, its multiples work too: down to the first that fails
        shape = (1, 3 * stride, 5 * stride, 3)
        try:
            with _fd2_muted():
                works = runner._call(np.zeros(shape, np.float32)).shape[1:3] == shape[1:3]
        except Exception:
            works = False
        if not works:
            runner.reset()
            break
        found = stride
    if found is not None:
        return found
    raise ModelError(f"the export does not return its input size for any output stride up to {STRIDES[-1]}",
                     runner.path)


def meta_path(path: str | Path, kind: str) -> Path:
    """Where the .keras model's record travels with its export at `path`: NAME.EXT.segcli.json beside a file,
    segcli.json inside a SavedModel folder."""
    path = Path(path)
    return path / "segcli.json" if kind == "savedmodel" else path.with_name(path.name + ".segcli.json")


def _read_json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read it: {first_line(exc, type(exc).__name__)}", file) from None
    if not isinstance(data, dict):
        raise ModelError("expected a JSON object", file)
    return data


def export_meta(path: Path, kind: str) -> dict:
    """The record that travels with the export at `path` (`meta_path`); {} without one."""
    file = meta_path(path, kind)
    return _read_json(file) if file.is_file() else {}


def export_classes(path: Path, kind: str, num_classes: int, meta: dict | None = None):
    """The classes that travel with an export: its record's, else classes.json beside the file (inside a SavedModel
    folder), read as the model's own record; default names without either."""
    from segcli.data import ClassMap, default_classes

    file = meta_path(path, kind) if meta and "classes" in meta else (
        path / "classes.json" if kind == "savedmodel" else path.parent / "classes.json")
    if not file.is_file():
        return default_classes(num_classes)
    data = meta["classes"] if meta and "classes" in meta else _read_json(file)
    try:
        classes = ClassMap.from_dict(data)
    except SegcliError as exc:
        raise ModelError(f"the export's classes: {exc.problem}", file) from None
    if classes.num_classes != num_classes:
        raise ModelError(f"lists {classes.num_classes} classes but the export {path.name} has {num_classes} "
                         "outputs", file)
    return classes


def load_predictor(path: str | Path, precision: str | None = "auto", engine: str | None = None):
    """Any model segcli runs as a segcli.modelfile.LoadedModel: a .keras file through Keras (at `precision`), an
    export through its engine (`choose_engine`; `model` is then the Engine), with its classes and output stride."""
    from segcli.modelfile import LoadedModel, load_model
    from segcli.precision import resolve_precision

    path = Path(path)
    engine = choose_engine(path, engine)
    if engine == "keras":
        return load_model(path, precision)
    chosen = resolve_precision(precision)[0] if precision is not None else "float32"
    runner = open_engine(path, engine, chosen if engine == "openvino" else "float32")
    kind = model_kind(path)
    meta = export_meta(path, kind)
    classes = export_classes(path, kind, runner.num_classes, meta)
    stride = 1 if runner.fixed_size else int(meta.get("output_stride") or find_stride(runner))
    return LoadedModel(model=runner, classes=classes, output_stride=stride,
                       meta={**meta, "engine": engine, "runtime": runner.runtime}, path=path,
                       precision=getattr(runner, "precision", "float32"))


__all__ = ["ENGINES", "RUNS", "Engine", "choose_engine", "model_kind", "installed", "install_line", "open_engine",
           "find_stride", "meta_path", "export_meta", "export_classes", "load_predictor"]
