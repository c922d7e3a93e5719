"""segcli.precision: the machine's precision, models rebuilt under another policy, and model files that are
saved in float32 and loaded under the precision of the machine that runs them."""

import json
import zipfile

import keras
import numpy as np
import pytest

from segcli import precision
from segcli.data import default_classes
from segcli.errors import SegcliError
from segcli.modelfile import load_model, save_model
from segcli.models import build_model
from segcli.precision import policy, reduced_policy, with_policy

TINY = dict(depth=2, base_filters=4, convs_per_block=1)


def _image(h=32, w=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (1, h, w, 3)).astype(np.float32)


def _policies(model):
    return {layer.name: layer.dtype_policy.name for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer)}


def _assert_same_weights(a, b):
    assert len(a.get_weights()) == len(b.get_weights())
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)


def test_float32_copy_rebuilds_a_mixed_model_with_the_same_weights():
    keras.utils.set_random_seed(1)
    with policy("mixed_bfloat16"):
        mixed = build_model("unet", 3, **TINY)
    assert reduced_policy(mixed) == "mixed_bfloat16"
    copy = with_policy(mixed, "float32")
    assert copy is not mixed and reduced_policy(copy) is None
    assert set(_policies(copy).values()) == {"float32"}
    _assert_same_weights(copy, mixed)
    x = _image()
    ref, got = mixed.predict(x, verbose=0), copy.predict(x, verbose=0)
    assert got.dtype == np.float32
    assert np.abs(got - ref).max() < 0.05 * max(1.0, np.abs(ref).max())  # only bf16 rounding apart


def test_a_model_already_under_the_policy_is_returned_itself():
    model = build_model("unet", 3, **TINY)
    assert with_policy(model, "float32") is model
    mixed = with_policy(model, "mixed_bfloat16")
    assert with_policy(mixed, "mixed_bfloat16") is mixed


def test_mixed_copy_keeps_the_class_score_head_in_float32():
    """From a float32 model (what files hold) to a mixed policy: every layer computes in bf16 except the
    class-score head (the score conv and the logits here), as the builders make them."""
    keras.utils.set_random_seed(2)
    model = build_model("unet", 3, **TINY)
    mixed = with_policy(model, "mixed_bfloat16")
    policies = _policies(mixed)
    assert policies.pop("logits") == "float32" and policies.pop("score") == "float32"
    assert set(policies.values()) == {"mixed_bfloat16"}
    _assert_same_weights(mixed, model)
    x = _image()
    ref, got = model.predict(x, verbose=0), mixed.predict(x, verbose=0)
    assert got.dtype == np.float32
    assert np.abs(got - ref).max() < 0.05 * max(1.0, np.abs(ref).max())


def test_unknown_precision_lists_the_valid_ones():
    with pytest.raises(SegcliError, match="must be one of float32, mixed_float16, mixed_bfloat16"):
        with_policy(build_model("unet", 3, **TINY), "float8")
    with pytest.raises(SegcliError, match="--precision: must be one of auto, float32, .*, got 'fp16'"):
        precision.resolve_precision("fp16")  # the recipe's message: one check for both


def test_model_files_are_float32_and_load_under_the_machine_precision(tmp_path, monkeypatch):
    """A model trained with mixed_float16 on a GPU must not run float16 convolutions on a CPU (6x slower
    than float32 here): the file holds float32, and load_model applies the precision of this machine."""
    keras.utils.set_random_seed(3)
    with policy("mixed_float16"):
        trained = build_model("unet", 3, **TINY)
    path = tmp_path / "model.keras"
    save_model(trained, path, default_classes(3))

    with zipfile.ZipFile(path) as zf:
        config = zf.read("config.json").decode()
    assert "float16" not in config  # neither mixed_float16 nor float16 anywhere in the file
    plain = keras.saving.load_model(path, compile=False)  # what a user without segcli gets
    assert set(_policies(plain).values()) == {"float32"}
    _assert_same_weights(plain, trained)

    loaded = load_model(path, precision="mixed_bfloat16")
    assert loaded.precision == "mixed_bfloat16" and _policies(loaded.model)["logits"] == "float32"
    assert load_model(path, precision=None).precision == "float32"  # as stored

    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "fma"})
    monkeypatch.setattr(precision, "gpu_available", lambda: False)
    auto = load_model(path)
    assert auto.precision == "float32" and reduced_policy(auto.model) is None
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    auto = load_model(path)
    assert auto.precision == "mixed_bfloat16" and reduced_policy(auto.model) == "mixed_bfloat16"


# /proc/cpuinfo of the three CPU kinds, cut down: a Xeon with AMX (its "vmx flags" line must not be read as
# the flags), an EPYC with AVX512-BF16 and no AMX, an EPYC with AVX2 only (this project's CI machine)
XEON_AMX = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8581C CPU @ 2.10GHz
flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
vmx flags\t: vnmi preemption_timer posted_intr
"""
EPYC_BF16 = "model name\t: AMD EPYC 9B14\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16\n"
EPYC_AVX2 = "model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 fma vaes\n"


@pytest.mark.parametrize("cpuinfo, expected, reason", [
    (XEON_AMX, "mixed_bfloat16", "native bf16 (amx_bf16)"),
    (EPYC_BF16, "mixed_bfloat16", "native bf16 (avx512_bf16)"),
    (EPYC_AVX2, "float32", "no native bf16"),
])
def test_auto_precision_per_cpu_kind(tmp_path, monkeypatch, cpuinfo, expected, reason):
    """auto is bf16 wherever the CPU computes it natively (AMX or AVX512-BF16: the class-score head in float32
    keeps it on float32's track there) and float32 where bf16 is only emulated."""
    from segcli.system import cpu_flags

    (tmp_path / "cpuinfo").write_text(cpuinfo)
    monkeypatch.setattr(precision, "cpu_flags", lambda: cpu_flags(tmp_path / "cpuinfo"))
    monkeypatch.setattr(precision, "gpu_available", lambda: False)
    policy_name, why = precision.resolve_precision("auto")
    assert policy_name == expected and reason in why
    assert precision.cpu_has_bf16() == (cpuinfo != EPYC_AVX2)
    if cpuinfo == XEON_AMX:
        assert precision.cpu_bf16() == "amx_bf16" and "vnmi" not in cpu_flags(tmp_path / "cpuinfo")
    assert precision.resolve_precision("mixed_bfloat16") == ("mixed_bfloat16", "chosen")  # opting in works
    monkeypatch.setattr(precision, "gpu_available", lambda: True)
    assert precision.resolve_precision("auto")[0] == "mixed_float16"  # a GPU beside any CPU


def test_auto_loads_models_in_bf16_on_amx_cpus(tmp_path, monkeypatch):
    """Inference follows training on AMX: predict / evaluate run mixed_bfloat16 there, the head in float32."""
    model = build_model("unet", 3, **TINY)
    path = tmp_path / "model.keras"
    save_model(model, path, default_classes(3))
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    monkeypatch.setattr(precision, "gpu_available", lambda: False)
    auto = load_model(path)
    assert auto.precision == "mixed_bfloat16" and reduced_policy(auto.model) == "mixed_bfloat16"
    assert _policies(auto.model)["score"] == "float32"
    chosen = load_model(path, precision="float32")  # float32 still on request
    assert chosen.precision == "float32" and reduced_policy(chosen.model) is None


def test_meta_is_kept_and_the_file_loads_with_its_classes(tmp_path):
    with policy("mixed_bfloat16"):
        trained = build_model("unet", 3, **TINY)
    path = tmp_path / "model.keras"
    save_model(trained, path, default_classes(3), {"precision": "mixed_bfloat16"})
    loaded = load_model(path, precision="float32")
    assert loaded.meta["precision"] == "mixed_bfloat16"  # what it was trained with, for the record
    assert loaded.classes.names == default_classes(3).names and loaded.output_stride == 4
    with zipfile.ZipFile(path) as zf:
        assert json.loads(zf.read("segcli.json"))["output_stride"] == 4


def test_mixed_float16_compiles_with_loss_scaling():
    """The GPU default: build_model under the policy, compile afterwards, and Keras wraps the optimizer."""
    from segcli import recipe as recipes
    from segcli.training.optim import make_optimizer

    with policy("mixed_float16"):
        model = build_model("unet", 3, **TINY)
    model.compile(optimizer=make_optimizer(recipes.resolve().train, 10), loss="mse")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)


# --- the class-score head in float32 ---------------------------------------------------------------
HEAD_CLASSES = 7  # no builder's feature width, so a layer with 7 output channels is a class-score layer

# every registered architecture (presets included), each decoder and upsampling of the builders, an
# encoder net of each, and a net that runs on a downsampled input (its logits are upsampled bilinearly)
HEAD_NETS = [(name, {}) for name in ("fcn", "fcn32s", "fcn16s", "fcn8s", "unet", "lambda-fcn", "lambda-unet")] + [
    ("fcn", dict(decoder="mirror", filters=(8, 16))),
    ("fcn", dict(upsample="resize", filters=(8, 16, 32))),
    ("fcn", dict(upsample="resize_bilinear", filters=(8, 16, 32), downsample_input=2)),
    ("unet", dict(upsample="resize", depth=2, base_filters=4)),
    ("fcn", dict(encoder="mobilenetv3small")),
    ("unet", dict(encoder="mobilenetv3small", base_filters=4)),
]


def _layer_policies(model) -> dict[str, str]:
    """Each layer's policy, those inside a nested model (a pretrained encoder) too; not the nested model's own,
    which computes nothing."""
    return {layer.name: layer.dtype_policy.name for layer in precision.all_layers(model)
            if not isinstance(layer, (keras.layers.InputLayer, keras.Model))}


def _head_layers(model) -> set[str]:
    """The layers that produce or combine class scores, found from the structure: HEAD_CLASSES channels out."""
    return {layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)
            and not isinstance(layer.output, list) and layer.output.shape[-1] == HEAD_CLASSES}


@pytest.mark.parametrize("mixed", ["mixed_bfloat16", "mixed_float16"])
def test_every_builder_keeps_its_class_score_head_in_float32(mixed):
    """Under each mixed policy the head (score convs, their upsampling and fusion, the logits) is float32 and
    every other layer computes in the mixed policy; the head is what is_head_layer names (so with_policy finds
    it in a float32 model file: the same policies after a round trip through float32)."""
    from segcli.models import list_models

    assert set(list_models()) <= {name for name, _ in HEAD_NETS}  # a new architecture must be listed here
    for name, options in HEAD_NETS:
        with policy(mixed):
            model = build_model(name, HEAD_CLASSES, **options)
        policies = _layer_policies(model)
        head = _head_layers(model)
        assert "logits" in head and len(head) >= 2, (name, options, head)  # at least a scoring layer and logits
        assert {n for n in policies if precision.is_head_layer(n)} == head, (name, options)
        assert {n: p for n, p in policies.items() if n in head} == dict.fromkeys(head, "float32"), (name, options)
        assert {p for n, p in policies.items() if n not in head} == {mixed}, (name, options)
        assert _layer_policies(with_policy(with_policy(model, "float32"), mixed)) == policies, (name, options)


def _gradient(model, x, y):
    import tensorflow as tf

    from segcli.training.losses import make_loss

    loss_fn = make_loss("ce", HEAD_CLASSES, None)

    @tf.function  # a graph, as fit runs the step
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    return np.concatenate([g.numpy().astype(np.float64).ravel() for g in step(x, y)])


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the bf16 kernels measured are TensorFlow's")
@pytest.mark.parametrize("name", ["lambda-fcn", "lambda-unet"])
def test_the_head_rule_keeps_the_bf16_gradient_on_float32s_track(name):
    """A tiny batch (2 images of 64x64, random labels of 7 classes), the same weights in float32, in
    mixed_bfloat16 as the builders make it (head in float32) and in plain mixed_bfloat16 (head in bf16 too, the
    logits float32). The whole gradient's relative error against float32's, seeds 0 and 1, measured on an AMD
    EPYC with AVX512-BF16:

    | kernels                        | lambda-fcn plain / rule   | lambda-unet plain / rule  |
    | oneDNN (native bf16)           | 0.91, 0.88 / 0.047, 0.049 | 0.45, 0.47 / 0.043, 0.047 |
    | Eigen (TF_ENABLE_ONEDNN_OPTS=0 | 0.91, 0.88 / 0.066, 0.065 | 0.45, 0.47 / 0.047, 0.051 |
    |   emulates bf16, as on AVX2)   |                           |                           |

    So the bound is 0.2: the rule stays 3x under it, plain bf16 over 2x above (worse still on AMX: precision.py).
    """
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = build_model(name, HEAD_CLASSES)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 255, (2, 64, 64, 3)).astype(np.float32))
    y = tf.constant(rng.integers(0, HEAD_CLASSES, (2, 64, 64)).astype(np.int32))
    config = with_policy(model, "mixed_bfloat16").get_config()
    for layer in config["layers"]:
        if layer["config"]["name"] not in ("image", "logits"):
            layer["config"]["dtype"] = "mixed_bfloat16"
    plain = keras.Model.from_config(config)
    plain.set_weights(model.get_weights())
    assert _policies(plain)["up_final_convT"] == "mixed_bfloat16"

    reference = _gradient(model, x, y)
    errors = {label: np.linalg.norm(_gradient(m, x, y) - reference) / np.linalg.norm(reference)
              for label, m in (("rule", with_policy(model, "mixed_bfloat16")), ("plain", plain))}
    assert errors["rule"] < 0.2 < errors["plain"], errors
