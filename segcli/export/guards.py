"""What an export needs before any work, each a one-line error naming the command, the install or the path:
the backend a format is written on (SavedModel and TFLite: tensorflow; ONNX: torch or tensorflow), the packages
ONNX needs, and what the output may replace (`--force` replaces only an earlier export; a classes.json beside
a file export with other classes is kept without it).
"""

from __future__ import annotations

import json
import shlex
from importlib.util import find_spec
from pathlib import Path

from segcli import backend as backends
from segcli.data import ClassMap
from segcli.errors import DataError, SegcliError
from segcli.export.formats import DEFAULT_OPSET, FORMAT_NAMES, ONNX_MARK, ONNX_PRODUCERS, SUFFIXES, ExportError
from segcli.export.int8 import DEFAULT_CALIBRATION
from segcli.files import check_replaceable, check_writable_dir, exists_or_link, guard_output, segcli_folder_kind
from segcli.runfolder import trained_on

ONNX_PACKAGES = ("tf2onnx", "onnx", "onnxruntime")  # on tensorflow; torch exports with torch.onnx
INSTALL_HINT = backends.install_hint("export")
TF_FORMATS = ("savedmodel", "tflite", "openvino")  # written through TensorFlow: the tensorflow backend only
ONNX_BACKENDS = ("torch", "tensorflow")  # the backends ONNX is exported from, in the order offered


def missing_format_packages(fmt: str, backend: str | None = None, int8: bool = False) -> tuple[list[str], str]:
    """The packages exporting ``fmt`` (quantised to INT8 with ``int8``) needs that are not installed, and the
    install line for them."""
    if fmt == "onnx":
        return missing_onnx_packages(backend), INSTALL_HINT
    if fmt == "openvino":
        extra, names = ("int8", ("openvino", "nncf")) if int8 else ("openvino", ("openvino",))
        return [name for name in names if find_spec(name) is None], backends.install_hint(extra)
    return [], ""


def missing_onnx_packages(backend: str | None = None) -> list[str]:
    """The packages ONNX export needs on ``backend`` (default: Keras') that are not installed (found, not imported):
    tf2onnx, onnx and onnxruntime on tensorflow; onnx and onnxruntime on torch (torch.onnx is part of torch)."""
    backend = backend or backends.name()
    names = ONNX_PACKAGES if backend == "tensorflow" else tuple(n for n in ONNX_PACKAGES if n != "tf2onnx")
    return [name for name in names if find_spec(name) is None]


def _command_on(backend: str, model_path: Path, fmt: str, out, size, force: bool, opset: int, int8_data,
                calibration: int) -> str:
    """The `segcli --backend BACKEND export ...` line that repeats this export's arguments."""
    args = ["segcli", "--backend", backend, "export", str(model_path), "--format", fmt]
    args += ["--out", str(out)] if out is not None else []
    args += ["--size", f"{size[0]}x{size[1]}"] if size is not None else []
    args += ["--opset", str(opset)] if opset != DEFAULT_OPSET else []
    if int8_data is not None:
        args += ["--int8", "--data", str(int8_data)]
        args += ["--calibration", str(calibration)] if calibration != DEFAULT_CALIBRATION else []
    args += ["--force"] if force else []
    return shlex.join(args)


def backend_problem(fmt: str, backend: str, model_path: Path, out=None, size=None, force: bool = False,
                    opset: int = DEFAULT_OPSET, int8_data=None, calibration: int = DEFAULT_CALIBRATION) -> str | None:
    """Why ``fmt`` cannot be exported on ``backend`` (one line naming the command or the install), else None.
    Looks for the other backends without importing them."""
    def command(other: str) -> str:
        return _command_on(other, model_path, fmt, out, size, force, opset, int8_data, calibration)

    if fmt in TF_FORMATS and backend != "tensorflow":
        if backends.installed("tensorflow"):
            return (f"{FORMAT_NAMES[fmt]} needs the TensorFlow backend (this is {backend}): "
                    f"{command('tensorflow')}")
        return (f"{FORMAT_NAMES[fmt]} needs TensorFlow, which is not installed (this is {backend}): "
                f"{backends.install_hint('tensorflow')}")
    if fmt == "onnx" and backend not in ONNX_BACKENDS:
        why = (f"ONNX export is not available on {backend} (Keras' {backend} exporter, jax2onnx, writes max-pooling "
               "that onnxruntime rejects)")
        other = next((b for b in ONNX_BACKENDS if backends.installed(b)), None)
        if other:
            return f"{why}; export from {other}: {command(other)}"
        return f"{why}; install torch to export from it: {backends.install_hint('torch')}"
    return None


def default_output(model_path: Path, fmt: str, int8: bool = False) -> Path:
    if fmt == "savedmodel":
        return model_path.with_name(f"{model_path.stem}_savedmodel")
    if int8:  # beside the float32 IR, not over it
        return model_path.with_name(f"{model_path.stem}-int8{SUFFIXES[fmt]}")
    return model_path.with_suffix(SUFFIXES[fmt])


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
    if fmt == "openvino":  # an IR's .xml: <?xml ...?> then <net ...>
        try:
            with open(path, "rb") as f:
                return head.startswith(b"<?xml") and b"<net " in f.read(4096)
        except OSError:
            return False
    if not head.startswith(b"\x08"):  # ModelProto's first field, ir_version
        return False
    try:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    marked = any(p.key == ONNX_MARK for p in proto.metadata_props)
    return (marked or proto.producer_name in ONNX_PRODUCERS) and len(proto.graph.node) > 0


def check_output(model_path: Path, out: Path, fmt: str, force: bool) -> None:
    """Before any work: the export may replace only an earlier export (with ``force``) and its folder must take
    files; anything else is a one-line error naming the path. Links are followed: an --out that leads into the
    data the model was trained on (its run.json's data_dir) is refused (guard_output)."""
    guard_output(out, [trained_on(model_path)])
    if model_path.exists():
        model_real, out_real = model_path.resolve(), out.resolve()
        if model_real == out_real:
            raise SegcliError("the export would replace the model file itself; choose another --out", out)
        if out_real in model_real.parents:
            raise SegcliError(f"holds the model file {model_path}; choose another --out", out)
    if fmt == "savedmodel":
        if out.is_dir():  # through a link too: its target is judged
            kind = segcli_folder_kind(out)
            if kind not in (None, "export"):
                raise ExportError(f"is a segcli {kind} folder, not an export; --force replaces only an earlier "
                                  "export, choose another --out", out)
        check_replaceable(out, force, what="--out")  # a file, a link, or a folder segcli did not make: refused
    elif fmt == "openvino" and exists_or_link(out.with_suffix(".bin")) and not exists_or_link(out):
        raise ExportError("exists without its .xml and would be replaced by the IR's weights; choose another --out",
                          out.with_suffix(".bin"))
    elif exists_or_link(out):
        if out.is_dir():
            raise ExportError(f"is a folder; --out for --format {fmt} is the file to write "
                              f"(e.g. {out / default_output(model_path, fmt).name})", out)
        if not _is_export_file(out, fmt):
            raise ExportError(f"exists and is not a {FORMAT_NAMES[fmt]} export; --force replaces only an earlier "
                              "export of the same format, choose another --out", out)
        if not force:
            raise ExportError("already exists; use --force to replace it", out)
    check_writable_dir(out.parent)


def check_classes_file(path: Path, classes: ClassMap, force: bool) -> bool:
    """True if classes.json must be written; ExportError if a different one is there and not --force."""
    if not exists_or_link(path):
        return True
    try:  # read as a model's own record, as predict reads it (a class named like the ignore label is kept)
        same = ClassMap.from_dict(json.loads(path.read_text(encoding="utf-8"))).to_dict() == classes.to_dict()
    except (DataError, OSError, ValueError):
        same = False
    if same:
        return False
    if not force:
        raise ExportError("exists with different classes than the model's; use --force to replace it", path)
    return True
