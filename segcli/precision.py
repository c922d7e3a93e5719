"""Compute precision: fp16 on a GPU, bf16 on a CPU with native bf16 (AVX512-BF16 or AMX), else fp32; the
class-score head that stays in float32 under both mixed policies; and copies of a model under another precision.

Model files are saved in float32 and loaded under the precision of the machine that runs them: a model
trained with mixed_float16 on a GPU would otherwise run float16 convolutions on a CPU (6x slower than float32
on the project's AMD EPYC with AVX512-BF16).
"""

from __future__ import annotations

import contextlib
import re

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


def resolve_precision(choice: str = "auto") -> tuple[str, str]:
    """Return (policy name, reason). ``auto`` picks the reduced precision the device computes natively:

    - a GPU: mixed_float16 (with loss scaling);
    - a CPU with native bf16 (AMX or AVX512-BF16): mixed_bfloat16;
    - any other CPU: float32 (bf16 is emulated there, many times slower).

    Under both mixed policies the class-score head computes in float32 (HEAD_DTYPE, is_head_layer): with it in
    bf16, training on a Xeon with AMX lost 17 mIoU points, which is why auto once chose float32 there. The same
    choice serves inference (load_model, so predict / evaluate / compare). The figures: docs/precision.md; the
    ``precision`` section of `segcli bench` and benchmarks/precision_layers.py check a CPU.
    """
    try:
        check_choice(choice, ("auto", *PRECISIONS))  # the recipe's check and message (predict's flag comes here)
    except ValueError as exc:
        raise SegcliError(f"--precision: {exc}") from None
    if choice != "auto":
        return choice, "chosen"
    if gpu_available():
        return "mixed_float16", "GPU found"
    bf16 = cpu_bf16()
    if bf16 is None:
        return "float32", "no GPU and no native bf16 on this CPU"
    return "mixed_bfloat16", f"CPU has native bf16 ({bf16})"


# --- the class-score head ------------------------------------------------------------------------

HEAD_DTYPE = "float32"  # the head's policy under every policy (the variables of a mixed policy are float32 too)
HEAD_LAYER = re.compile(r"score(_s\d+)?|fuse_s\d+|(up_s\d+|up_final)_(convT|resize|conv)|upsample_logits|logits"
                        r"|aux_(score|upsample)")  # aux_: the training-only head (segcli.training.aux)


def is_head_layer(name: str) -> bool:
    """Whether the layer called ``name`` belongs to the class-score head, as segcli's builders name it: the layers
    after the last feature layer that produce or combine class scores (score convs, their upsampling and
    fusion, the logits). They compute in float32 under a mixed policy: a bf16 gradient of a dozen channels
    summed over every pixel of a batch is lost (camvid-fcn at 128x160: the whole bf16 gradient 0.63 off
    float32's, relative; 0.04 with the head in float32, on a Xeon with AMX), and the head costs a few percent
    of the FLOPs. The builders put these layers in HEAD_DTYPE, and with_policy keeps them there.
    """
    return HEAD_LAYER.fullmatch(name) is not None


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


def all_layers(model):
    """The model's layers, those of nested models (a pretrained encoder) included."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def reduced_policy(model: keras.Model) -> str | None:
    """The first mixed/half dtype policy among the model's layers (None: all float32)."""
    for layer in all_layers(model):
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


def _mixed_config(config: dict, name: str, top: bool = True) -> dict:
    """A functional model's config with its layers under ``name``, those of nested models (a pretrained
    encoder) included, and the class-score head (is_head_layer) and the output layers in float32, as the
    builders make them. Quantized layers keep their policy."""
    outputs = config["output_layers"]
    outputs = {outputs[0]} if outputs and isinstance(outputs[0], str) else {out[0] for out in outputs}
    for layer in config["layers"]:
        inner = layer["config"]
        if "output_layers" in inner:  # a nested functional model (a pretrained encoder)
            _mixed_config(inner, name, top=False)
        if layer["class_name"] != "InputLayer" and _is_float_dtype(inner.get("dtype"), FLOAT_POLICIES):
            head = top and (inner["name"] in outputs or is_head_layer(inner["name"]))
            inner["dtype"] = HEAD_DTYPE if head else name
    return config


def _needs_copy(model: keras.Model, name: str) -> bool:
    if name == "float32":
        return reduced_policy(model) is not None
    outputs = {id(tensor._keras_history[0]) for tensor in model.outputs}
    top = {id(layer) for layer in model.layers}
    for layer in all_layers(model):
        if isinstance(layer, (keras.layers.InputLayer, keras.Model)) or _policy_name(layer) not in FLOAT_POLICIES:
            continue  # a nested model's own policy computes nothing: its layers' do
        head = id(layer) in top and (id(layer) in outputs or is_head_layer(layer.name))
        if _policy_name(layer) != (HEAD_DTYPE if head else name):
            return True
    return False


def with_policy(model: keras.Model, name: str) -> keras.Model:
    """The model computing under dtype policy ``name`` with the same weights (the model itself if it already
    does): get_config -> policies rewritten -> from_config -> set_weights. The variables of a mixed policy
    are float32, so the weights carry over exactly. Raises SegcliError for a model that will not rebuild.
    """
    try:
        check_choice(name, PRECISIONS)
    except ValueError as exc:
        raise SegcliError(f"precision: {exc}") from None
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
