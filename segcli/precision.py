"""Compute precision: fp16 on a GPU, bf16 on a CPU with AVX512-BF16 but no AMX, else fp32 (see
resolve_precision for why not on AMX); and copies of a model under another precision.

Model files are saved in float32 and loaded under the precision of the machine that runs them: a model
trained with mixed_float16 on a GPU would otherwise run float16 convolutions on a CPU (6x slower than float32
on the project's AMD EPYC with AVX512-BF16).
"""

from __future__ import annotations

import contextlib

import keras

from segcli.choices import PRECISIONS, check_choice
from segcli.errors import SegcliError, describe
from segcli.system import cpu_flags, gpu_available

REDUCED_POLICIES = ("mixed_float16", "mixed_bfloat16", "float16", "bfloat16")
FLOAT_POLICIES = ("float32", *REDUCED_POLICIES)  # the plain ones with_policy rewrites (quantized ones stay)


def cpu_bf16() -> str | None:
    """How this CPU computes bf16: "amx_bf16" (AMX tiles; such CPUs also have AVX512-BF16), "avx512_bf16",
    or None (no native bf16: TensorFlow emulates it, 10-18x slower than float32 on an AVX2-only AMD EPYC)."""
    flags = cpu_flags()
    for flag in ("amx_bf16", "avx512_bf16"):
        if flag in flags:
            return flag
    return None


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: oneDNN then runs bf16 convolutions natively."""
    return cpu_bf16() is not None


AMX_REASON = ("CPU has AMX, where bf16 training lost accuracy (camvid-fcn: 43.7% val mIoU against 60.7% in "
              "float32); --precision mixed_bfloat16 opts in")


def resolve_precision(choice: str = "auto") -> tuple[str, str]:
    """Return (policy name, reason). ``auto`` never trades accuracy for speed:

    - a GPU: mixed_float16 (with loss scaling);
    - a CPU with AVX512-BF16 and no AMX: mixed_bfloat16 (on an AMD EPYC Zen 4, camvid-fcn reached 58.4% val mIoU
      in bf16, 1.6x faster than float32);
    - a CPU with AMX: float32 (on a Xeon with AMX, camvid-fcn lost 17 mIoU points in bf16, its train loss high
      from the first epochs; the AMX kernels are suspected, not identified);
    - any other CPU: float32 (bf16 is emulated there, many times slower).

    The same choice serves inference (load_model, so predict / evaluate / compare): with the AMX kernels at
    fault but not identified, the forward ones are not cleared either, and evaluate should score what training
    scored; --precision mixed_bfloat16 opts in. The figures: README, "Precision and GPUs"; the ``precision``
    section of `segcli bench` and benchmarks/precision_layers.py check a CPU.
    """
    try:
        check_choice(choice, ("auto", *PRECISIONS))  # the recipe's check and message (predict's flag comes here)
    except ValueError as exc:
        raise SegcliError(f"--precision: {exc}") from None
    if choice != "auto":
        return choice, "chosen"
    if gpu_available():
        return "mixed_float16", "GPU found"
    if not cpu_has_bf16():
        return "float32", "no GPU and no native bf16 on this CPU"
    if cpu_bf16() == "amx_bf16":
        return "float32", AMX_REASON
    return "mixed_bfloat16", "CPU has native bf16 (avx512_bf16, no AMX)"


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
        raise SegcliError(f"cannot rebuild the model in {name}: {describe(exc)}") from None
    if name == "float32" and reduced_policy(copy) is not None:
        raise SegcliError(f"cannot rebuild the model in float32: a layer keeps the {reduced_policy(copy)} policy")
    return copy
