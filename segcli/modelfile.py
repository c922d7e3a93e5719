"""Model files that carry their classes: a .keras zip with a `segcli.json` member beside Keras' own.

Keras ignores the extra member, so the file still loads with plain `keras.saving.load_model`;
segcli reads the class names, colours and output stride from it, so predict needs nothing else.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from segcli.backend import keep_tensorflow_out
from segcli.data import ClassMap, default_classes, load_classes
from segcli.errors import ModelError, SegcliError, first_line
from segcli.files import atomic_path
from segcli.models import output_stride
from segcli.precision import reduced_policy, resolve_precision, with_policy

META_NAME = "segcli.json"


@dataclass
class LoadedModel:
    model: keras.Model
    classes: ClassMap
    output_stride: int
    meta: dict = field(default_factory=dict)
    path: Path | None = None
    precision: str = "float32"  # the policy the model computes under here


def inference_copy(model: keras.Model) -> keras.Model:
    """The same layers in float32, without optimizer and compile state: small, loads without segcli's
    losses, and runs at full speed on any device (see segcli.precision)."""
    return with_policy(keras.Model(model.inputs, model.outputs, name=model.name), "float32")


def weights_bytes(model: keras.Model) -> int:
    """The bytes of ``model``'s weights as stored: about what a .keras or .weights.h5 file of it takes, less
    the files' overhead."""
    return int(sum(int(np.prod(w.shape, dtype=np.int64)) * np.dtype(w.dtype).itemsize for w in model.weights))


def file_size_needed(model: keras.Model) -> int:
    """About the bytes a file of ``model``'s weights needs on disk (its weights, HDF5's and the zip's overhead, the
    config): checked before saving, because h5py crashes (a segmentation fault) on a disk that fills meanwhile."""
    size = weights_bytes(model)
    return size + size // 20 + 1024 * 1024


def save_model(model: keras.Model, path: str | Path, classes: ClassMap, meta: dict | None = None) -> None:
    """Write ``model`` (its float32 inference copy) with its classes and ``meta`` to the .keras file ``path``,
    atomically; a disk without room for it is a one-line error naming ``path``, checked before h5py writes."""
    meta = {"classes": classes.to_dict(), "output_stride": output_stride(model), **(meta or {})}
    keep_tensorflow_out()  # Keras' saving would import TensorFlow off its backend
    copy = inference_copy(model)
    with atomic_path(path, suffix=".keras", needed=file_size_needed(copy)) as tmp:
        copy.save(tmp)
        with zipfile.ZipFile(tmp, "a") as zf:
            zf.writestr(META_NAME, json.dumps(meta, indent=2))


def read_meta(path: str | Path) -> dict:
    with zipfile.ZipFile(path) as zf:
        if META_NAME in zf.namelist():
            return json.loads(zf.read(META_NAME))
    return {}


def load_model(path: str | Path, precision: str | None = "auto") -> LoadedModel:
    """Load a .keras file; classes come from its metadata, else classes.json beside it, else defaults.

    precision: the policy to run under (``auto``: mixed_float16 with a GPU, mixed_bfloat16 on a CPU with native bf16
    (AVX512-BF16 or AMX), else float32, as resolve_precision says; None: as the file stores it).
    """
    path = Path(path)
    if precision is not None:
        precision = resolve_precision(precision)[0]
    if not path.is_file():
        raise ModelError("no such model file", path)
    if not zipfile.is_zipfile(path):
        raise ModelError("not a Keras model file (.keras zip expected)", path)
    try:

        model = keras.saving.load_model(path, compile=False)
        meta = read_meta(path)
    except Exception as exc:  # Keras raises many types for a damaged or foreign file
        raise ModelError(f"cannot load model: {first_line(exc, type(exc).__name__)}",
                         path) from None
    num_classes = int(model.output_shape[-1])
    if "classes" in meta:
        classes = ClassMap.from_dict(meta["classes"])
    elif (path.parent / "classes.json").is_file():
        classes = load_classes(path.parent / "classes.json")
    else:
        classes = default_classes(num_classes)
    if classes.num_classes != num_classes:
        raise ModelError(f"model has {num_classes} outputs but its classes list {classes.num_classes}", path)
    stride = int(meta.get("output_stride") or output_stride(model))
    if precision is not None:
        try:
            model = with_policy(model, precision)
        except SegcliError as exc:
            raise ModelError(exc.problem, path) from None
    return LoadedModel(model=model, classes=classes, output_stride=stride, meta=meta, path=path,
                       precision=precision or (reduced_policy(model) or "float32"))
