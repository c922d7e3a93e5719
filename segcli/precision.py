"""Compute precision: fp16 on a GPU, bf16 on a CPU with native bf16, else fp32; and copies of a model
under another precision.

Model files are saved in float32 and loaded under the precision of the machine that runs them: a model
trained with mixed_float16 on a GPU would otherwise run float16 convolutions on a CPU, measured 6x slower
than float32 and 11x slower than bfloat16 on our 2-core CPU.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import keras
import tensorflow as tf

from segcli.errors import SegcliError

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
REDUCED_POLICIES = ("mixed_float16", "mixed_bfloat16", "float16", "bfloat16")
FLOAT_POLICIES = ("float32", *REDUCED_POLICIES)  # the plain ones with_policy rewrites (quantized ones stay)


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: oneDNN then runs bf16 convolutions natively (training about 1.6x float32 here)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(choice: str = "auto") -> tuple[str, str]:
    """Return (policy name, reason)."""
    if choice not in ("auto", *PRECISIONS):
        raise SegcliError(f"unknown precision {choice!r}; valid: auto, {', '.join(PRECISIONS)}")
    if choice != "auto":
        return choice, "chosen"
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16", "GPU found"
    if cpu_has_bf16():
        return "mixed_bfloat16", "CPU has native bf16 (avx512_bf16/amx)"
    return "float32", "no GPU and no native bf16 on this CPU"


@contextlib.contextmanager
def policy(name: str):
    """Build layers under a dtype policy, then put the previous global policy back."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


# --- a model under another policy ----------------------------------------------------------------

def _policy_name(layer) -> str:
    return getattr(getattr(layer, "dtype_policy", None), "name", "float32")


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):  # a nested model
            yield from _all_layers(layer)


def reduced_policy(model: keras.Model) -> str | None:
    """The first mixed/half dtype policy among the model's layers (None: all float32)."""
    for layer in _all_layers(model):
        if _policy_name(layer) in REDUCED_POLICIES:
            return _policy_name(layer)
    return None


def _is_float_dtype(value, names) -> bool:
    if isinstance(value, dict) and value.get("class_name") == "DTypePolicy":
        value = (value.get("config") or {}).get("name")
    return isinstance(value, str) and value in names


def _float32_config(obj):
    """The config with every plain (not quantized) reduced dtype policy replaced by "float32"."""
    if isinstance(obj, list):
        return [_float32_config(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    return {key: "float32" if key == "dtype" and _is_float_dtype(value, REDUCED_POLICIES) else _float32_config(value)
            for key, value in obj.items()}


def _mixed_config(config: dict, name: str) -> dict:
    """A functional model's config with its layers under ``name``, the output layers in float32 (so logits
    leave in float32, as the builders make them). Quantized layers keep their policy."""
    outputs = config["output_layers"]
    outputs = {outputs[0]} if outputs and isinstance(outputs[0], str) else {out[0] for out in outputs}
    for layer in config["layers"]:
        inner = layer["config"]
        if layer["class_name"] != "InputLayer" and _is_float_dtype(inner.get("dtype"), FLOAT_POLICIES):
            inner["dtype"] = "float32" if inner["name"] in outputs else name
    return config


def _needs_copy(model: keras.Model, name: str) -> bool:
    if name == "float32":
        return reduced_policy(model) is not None
    outputs = {id(tensor._keras_history[0]) for tensor in model.outputs}
    return any(_policy_name(layer) != ("float32" if id(layer) in outputs else name)
               for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)
               and _policy_name(layer) in FLOAT_POLICIES)


def with_policy(model: keras.Model, name: str) -> keras.Model:
    """The model computing under dtype policy ``name`` with the same weights (the model itself if it already
    does): get_config -> policies rewritten -> from_config -> set_weights. The variables of a mixed policy
    are float32, so the weights carry over exactly. Raises SegcliError for a model that will not rebuild.
    """
    if name not in PRECISIONS:
        raise SegcliError(f"unknown precision {name!r}; valid: {', '.join(PRECISIONS)}")
    if not _needs_copy(model, name):
        return model
    try:
        config = model.get_config()
        config = _float32_config(config) if name == "float32" else _mixed_config(config, name)
        copy = type(model).from_config(config)
        copy.set_weights(model.get_weights())
    except Exception as exc:  # a layer that does not round-trip through its config, a non-functional model
        raise SegcliError(f"cannot rebuild the model in {name}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    if name == "float32" and reduced_policy(copy) is not None:
        raise SegcliError(f"cannot rebuild the model in float32: a layer keeps the {reduced_policy(copy)} policy")
    return copy
