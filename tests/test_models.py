"""segcli.models: builders, registry, facts, checkerboard demo, save/load, and the `models` CLI."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from segcli.errors import ModelError  # noqa: E402
from segcli.models import (build_fcn, build_model, build_unet, count_params, gflops, list_models,  # noqa: E402
                           model_entry, model_spec_from_toml, output_stride, register)
from segcli.models.blocks import checkerboard_demo  # noqa: E402
from segcli.models.registry import _REGISTRY  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 5

# tiny widths where the builder has them; the tutorial nets are built exactly as they are
TINY = {
    "fcn": dict(filters=(4, 8, 8, 8, 8), convs_per_block=1),
    "fcn32s": dict(filters=(4, 8, 8, 8, 8), convs_per_block=1),
    "fcn16s": dict(filters=(4, 8, 8, 8, 8), convs_per_block=1),
    "fcn8s": dict(filters=(4, 8, 8, 8, 8), convs_per_block=1),
    "unet": dict(base_filters=4, convs_per_block=1),
    "lambda-fcn": {},
    "lambda-unet": {},
}
# more variants through the builders' options: (registered name, options, expected output stride)
VARIANTS = [
    ("fcn8s", dict(filters=(4, 8, 8), encoder="strided", batch_norm=False), 8),
    ("fcn16s", dict(filters=(4, 8, 8, 8), upsample="resize_bilinear"), 16),
    ("fcn", dict(filters=(4, 8, 8), decoder="mirror", upsample="resize"), 8),
    ("unet", dict(depth=3, base_filters=4, encoder="strided", decoder_convs=1, upsample="resize"), 8),
    ("unet", dict(depth=2, base_filters=4), 4),
    ("fcn32s", dict(filters=(4, 8), head_filters=8, dropout=0.1), 4),
    ("unet", dict(depth=2, base_filters=4, downsample_input=2), 8),
    ("fcn8s", dict(filters=(4, 8, 8), downsample_input=2), 16),
]
SIZES = [(32, 32), (64, 96)]
GRAPH_MODE = {("lambda-fcn", None), ("lambda-unet", None), ("fcn8s", None)}


def _rgb(n, h, w, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, h, w, 3)).astype("float32")


def test_registered_names():
    names = list_models()
    for name in ("fcn", "fcn32s", "fcn16s", "fcn8s", "unet", "lambda-fcn", "lambda-unet"):
        assert name in names
        assert model_entry(name).description
    assert set(TINY) <= set(names)


@pytest.mark.parametrize("name,options,stride", [(n, o, None) for n, o in TINY.items()] + VARIANTS,
                         ids=[n for n in TINY] + [f"{n}-{i}" for i, (n, _, _) in enumerate(VARIANTS)])
def test_builds_keeps_size_and_trains(name, options, stride):
    model = build_model(name, NUM_CLASSES, **options)
    got = output_stride(model)
    if stride is not None:
        assert got == stride
    assert model.inputs[0].shape[1:] == (None, None, 3)
    assert model.layers[-1].__class__.__name__ == "Activation"
    assert model.outputs[0].dtype == "float32"
    for h, w in SIZES:
        assert h % got == 0 and w % got == 0
        out = model(_rgb(1, h, w), training=False)
        assert tuple(out.shape) == (1, h, w, NUM_CLASSES)
    # tracing a graph costs seconds on 2 cores: graph mode for a few nets, eager for the rest
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  run_eagerly=(name, stride) not in GRAPH_MODE)
    x = _rgb(2, 32, 32, seed=1)
    y = np.random.default_rng(2).integers(0, NUM_CLASSES, (2, 32, 32)).astype("int32")
    loss = model.train_on_batch(x, y)
    assert np.isfinite(float(np.asarray(loss).ravel()[0]))


def test_output_stride_matches_depth():
    assert output_stride(build_fcn(3, filters=(4, 4, 4), convs_per_block=1)) == 8
    assert output_stride(build_fcn(3, variant="fcn32s", filters=(4,) * 5, convs_per_block=1)) == 32
    assert output_stride(build_unet(3, depth=3, base_filters=4, convs_per_block=1)) == 8
    assert output_stride(build_model("lambda-fcn", 12)) == 16
    assert output_stride(build_model("lambda-unet", 12)) == 16


def test_tutorial_parameter_counts():
    fcn = build_model("lambda-fcn", 12)
    unet = build_model("lambda-unet", 12)
    assert count_params(fcn) == 1_384_652
    assert count_params(unet) == 1_554_636
    # structure: 4 strided 4x4 convs with bias, 4 transposed convs, no BN, concat [encoder, decoder]
    convs = [l for l in fcn.layers if l.__class__.__name__ == "Conv2D"]
    assert [(l.filters, l.kernel_size, l.strides, l.use_bias) for l in convs] == [
        (f, (4, 4), (2, 2), True) for f in (32, 64, 128, 256)]
    assert [l.filters for l in fcn.layers if l.__class__.__name__ == "Conv2DTranspose"] == [128, 64, 32, 12]
    assert not [l for l in fcn.layers + unet.layers if "BatchNormalization" in l.__class__.__name__]
    concats = [l for l in unet.layers if l.__class__.__name__ == "Concatenate"]
    assert len(concats) == 3
    first = concats[0]._inbound_nodes[0].input_tensors
    assert [t.shape[-1] for t in first] == [128, 128]
    assert first[0] is unet.get_layer("enc3_relu").output


def test_gflops_analytic():
    # lambda-fcn at 64x64: MACs by hand (transposed convs: input pixels x k*k x Cin x Cout)
    k = 16
    macs = (32 * 32 * k * 3 * 32 + 16 * 16 * k * 32 * 64 + 8 * 8 * k * 64 * 128 + 4 * 4 * k * 128 * 256
            + 4 * 4 * k * 256 * 128 + 8 * 8 * k * 128 * 64 + 16 * 16 * k * 64 * 32 + 32 * 32 * k * 32 * 12)
    assert gflops(build_model("lambda-fcn", 12), 64, 64) == pytest.approx(2 * macs / 1e9)
    dense = keras.Sequential([keras.Input((10,)), keras.layers.Dense(7)])
    assert gflops(dense, 1, 1) == pytest.approx(2 * 70 / 1e9)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ModelError) as exc:
        build_model("fcn4s", 3)
    for name in ("fcn", "unet", "lambda-fcn", "lambda-unet"):
        assert name in str(exc.value)


def test_unknown_option_lists_valid_options():
    with pytest.raises(ModelError) as exc:
        build_model("unet", 3, widht=8)
    msg = str(exc.value)
    assert "widht" in msg and "depth" in msg and "base_filters" in msg and "upsample" in msg
    with pytest.raises(ModelError, match="variant"):
        build_model("fcn", 3, variant="fcn4s")
    with pytest.raises(ModelError, match="upsample"):
        build_model("unet", 3, upsample="deconv")
    with pytest.raises(ModelError, match="fuses 3"):
        build_fcn(3, filters=(4, 4))


def test_register_as_decorator():
    try:
        @register("tiny-test-net", description="a test net", depth=1)
        def tiny(num_classes, *, depth=2, base_filters=4):
            return build_unet(num_classes, depth=depth, base_filters=base_filters, convs_per_block=1)

        assert "tiny-test-net" in list_models()
        assert output_stride(build_model("tiny-test-net", 2)) == 2
        with pytest.raises(ModelError, match="base_filters"):
            build_model("tiny-test-net", 2, nope=1)
    finally:
        _REGISTRY.pop("tiny-test-net", None)


def test_checkerboard_effect():
    flat = np.ones((1, 8, 8, 1), "float32")

    def interior(model):
        out = np.asarray(model(flat))[0, :, :, 0]
        assert out.shape == (16, 16)
        return out[3:-3, 3:-3]

    uneven = interior(checkerboard_demo("transpose", kernel_size=3, stride=2))
    assert uneven.std() > 0.5  # periodic: 1 / 2 / 4 overlaps alternate
    assert len(np.unique(uneven)) > 1
    assert np.allclose(uneven[::2, ::2], uneven[0, 0]) and uneven[0, 0] != uneven[1, 1]
    assert interior(checkerboard_demo("transpose", kernel_size=4, stride=2)).std() < 1e-6
    assert interior(checkerboard_demo("resize", kernel_size=3, stride=2)).std() < 1e-6
    assert interior(checkerboard_demo("resize_bilinear", kernel_size=3, stride=2)).std() < 1e-5
    # the builders refuse such kernels unless asked
    with pytest.raises(ModelError, match="checkerboard"):
        build_unet(3, depth=1, base_filters=4, up_kernel=3)
    with pytest.raises(ModelError, match="checkerboard"):
        build_model("fcn", 3, filters=(4, 4, 4), up_kernel=3)
    model = build_unet(3, depth=1, base_filters=4, up_kernel=3, allow_checkerboard=True, convs_per_block=1)
    assert tuple(model(_rgb(1, 16, 16)).shape) == (1, 16, 16, 3)


def test_mixed_precision_logits_are_float32():
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        for name, options in (("lambda-unet", {}), ("fcn", TINY["fcn"]), ("unet", dict(base_filters=4, depth=2))):
            model = build_model(name, 3, **options)
            assert model.outputs[0].dtype == "float32"
            assert keras.backend.standardize_dtype(model(_rgb(1, 32, 32)).dtype) == "float32"
            assert any(l.compute_dtype == "bfloat16" for l in model.layers if l.weights)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert keras.mixed_precision.global_policy().name == "float32"


def test_bn_momentum_reaches_every_batchnorm_layer_and_its_saved_config(tmp_path):
    for builder, options in ((build_unet, dict(depth=2, base_filters=4)), (build_fcn, TINY["fcn"])):
        default = builder(NUM_CLASSES, **options)
        model = builder(NUM_CLASSES, bn_momentum=0.9, **options)
        bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
        assert bns and all(l.momentum == 0.9 for l in bns)
        assert {l.momentum for l in default.layers if isinstance(l, keras.layers.BatchNormalization)} == {0.99}
        model.save(tmp_path / "m.keras")
        loaded = keras.saving.load_model(tmp_path / "m.keras")
        assert {l.momentum for l in loaded.layers if isinstance(l, keras.layers.BatchNormalization)} == {0.9}
        # one training step moves the moving mean by (1 - momentum) of the way to the batch mean
        x = _rgb(4, 32, 32, seed=5)
        bn = bns[0]
        before = np.asarray(bn.moving_mean).copy()
        model(x, training=True)
        batch_mean = np.asarray(keras.Model(model.inputs, bn.input)(x)).mean(axis=(0, 1, 2))
        np.testing.assert_allclose(np.asarray(bn.moving_mean), 0.9 * before + 0.1 * batch_mean, rtol=1e-4, atol=1e-5)
    for bad in (0.0, 1.0, 1.5, True, "0.9"):
        with pytest.raises(ModelError, match="bn_momentum"):
            build_unet(NUM_CLASSES, depth=2, base_filters=4, bn_momentum=bad)


def test_save_load_without_segcli(tmp_path):
    x = _rgb(2, 32, 32, seed=3)
    names = []
    for name, options in TINY.items():
        model = build_model(name, NUM_CLASSES, **options)
        model.save(tmp_path / f"{name}.keras")
        np.save(tmp_path / f"{name}.npy", np.asarray(model(x, training=False)))
        names.append(name)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np, keras
        x = np.load("x.npy")
        for name in {json.dumps(names)}:
            model = keras.saving.load_model(name + ".keras")
            got = np.asarray(model(x, training=False))
            want = np.load(name + ".npy")
            assert got.dtype == np.float32, (name, got.dtype)
            assert np.allclose(got, want, rtol=1e-5, atol=1e-5), (name, float(np.abs(got - want).max()))
        assert not [m for m in sys.modules if m.startswith("segcli")]
        print("loaded", len({json.dumps(names)}))
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"loaded {len(names)}" in proc.stdout


def test_model_spec_from_toml(tmp_path):
    for name in ("lambda-fcn", "lambda-unet"):
        assert model_spec_from_toml(os.path.join(ROOT, "segcli", "resources", "recipes", f"{name}.toml")) == (name, {})
    recipe = tmp_path / "r.toml"
    recipe.write_text('[data]\nnum_classes = 3\n[model]\nname = "unet"\n[model.options]\ndepth = 2\n'
                      'base_filters = 4\n[train]\nepochs = 1\n')
    assert model_spec_from_toml(recipe) == ("unet", {"depth": 2, "base_filters": 4})
    with pytest.raises(ModelError, match="no such"):
        model_spec_from_toml(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[model\nname=")
    with pytest.raises(ModelError, match="TOML"):
        model_spec_from_toml(tmp_path / "bad.toml")
    (tmp_path / "nomodel.toml").write_text("[train]\nepochs = 1\n")
    with pytest.raises(ModelError, match=r"\[model\]"):
        model_spec_from_toml(tmp_path / "nomodel.toml")


def test_cli_show(cli, tmp_path):
    result = cli("models", "show", "lambda-fcn", "--classes", "12")
    assert result.exit_code == 0, result.output
    assert "params: 1384652" in result.output
    assert "output stride: 16" in result.output
    result = cli("models", "show", os.path.join(ROOT, "segcli", "resources", "recipes", "lambda-unet.toml"), "--size", "64x64",
                 "--summary")
    assert result.exit_code == 0, result.output
    assert "params: 1554636" in result.output and "Concatenate" in result.output
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\nname = "unet"\n[model.options]\ndepth = 2\nbase_filters = 4\n')
    result = cli("models", "show", recipe, "--classes", "3", "--size", "32x32")
    assert result.exit_code == 0, result.output
    assert "output stride: 4" in result.output


def test_cli_show_finds_a_shipped_recipe_by_name(cli):
    """`models show --recipe camvid-fcn` finds the shipped recipe as `train --recipe camvid-fcn` does."""
    result = cli("models", "show", "--recipe", "camvid-fcn", "--classes", "3", "--size", "64x64")
    assert result.exit_code == 0, result.output
    assert "model: fcn  (from " in result.output and "camvid-fcn.toml)" in result.output
    assert "'downsample_input': 2" in result.output  # built with the recipe's options, not fcn's defaults
    assert "params: 1177506" in result.output and "params: 1177506" not in cli(
        "models", "show", "fcn", "--classes", "3", "--size", "64x64").output
    for args in (("--recipe", "no-such-recipe"), ("lambda-fcn", "--recipe", "camvid-fcn"), ()):
        result = cli("models", "show", *args)
        assert result.exit_code == 2 and "Traceback" not in result.output, (args, result.output)
    assert "shipped recipes: " in cli("models", "show", "--recipe", "no-such-recipe").output


def test_cli_show_describes_a_trained_model_file_or_refuses_a_file_that_is_not_one(cli, tmp_path):
    """`models show MODEL.keras`: the architecture, classes, crop size and precision the file's training
    recorded (as segcli train saves them), and its parameters; a file that is not a model is one line naming it."""
    import zipfile

    from segcli.data import default_classes
    from segcli.modelfile import save_model
    from segcli.recipe import resolve

    recipe = resolve({"model": {"name": "unet", "options": {"depth": 2, "base_filters": 4}},
                      "data": {"size": [64, 96]}, "train": {"precision": "mixed_bfloat16"}})
    net = build_model("unet", 3, depth=2, base_filters=4)
    path = tmp_path / "run0" / "model.keras"
    path.parent.mkdir()
    classes = default_classes(3, names=["sky", "road", "car"])
    save_model(net, path, classes, {"recipe": recipe.to_dict(), "precision": "mixed_bfloat16", "model_name": "unet",
                                    "dataset_classes": 3})  # the metadata segcli.training.run saves
    result = cli("models", "show", path, "--size", "64x64")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"model file: {path}" in out and "architecture: unet" in out and "'base_filters': 4" in out
    assert "classes (3): sky, road, car" in out and "trained on: 64x96 crops" in out
    assert "trained in precision: mixed_bfloat16" in out and f"params: {count_params(net)}" in out
    assert f"GFLOPs per 64x64 image: {gflops(net, 64, 64):.3f}" in out and "output stride: 4" in out

    plain = tmp_path / "plain.keras"  # saved by plain Keras: what is not recorded says so
    net.save(plain)
    result = cli("models", "show", plain)
    assert result.exit_code == 0, result.output
    assert "trained in precision: not recorded" in result.stdout and f"params: {count_params(net)}" in result.stdout

    text = tmp_path / "notes.keras"
    text.write_text("not a model")
    other_zip = tmp_path / "data.zip"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("a.txt", "x")
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    for bad in (text, other_zip, binary, tmp_path / "missing.keras"):
        result = cli("models", "show", bad)
        assert result.exit_code == 2, (bad, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in result.output, (bad, result.stderr)


def test_cli_errors(cli, tmp_path):
    for args in (("models", "--size", "12"), ("models", "show", "lambda-fcn", "--size", "12"),
                 ("models", "show", "nope"), ("models", "show", tmp_path / "missing.toml")):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "error:" in result.output and "Traceback" not in result.output
    assert "lambda-unet" in cli("models", "show", "nope").output  # lists the valid names


def test_cli_table(cli):
    result = cli("models", "--size", "64x64", "--classes", "12")
    assert result.exit_code == 0, result.output
    for name in ("fcn8s", "fcn32s", "unet", "lambda-fcn", "lambda-unet"):
        assert name in result.output
    assert "1,384,652" in result.output and "1,554,636" in result.output


def test_bilinear_and_downsampled_nets_train_on_unknown_sizes():
    """tf.data pipelines give (None, None) shapes; Keras' bilinear UpSampling2D cannot trace those."""
    import tensorflow as tf

    from segcli.models.blocks import bilinear_upsample

    x = np.zeros((1, 4, 4, 1), "float32")
    x[0, :, :, 0] = np.arange(4)[None, :]
    inp = keras.Input((None, None, 1))
    up = keras.Model(inp, bilinear_upsample(inp, 2, name="up"))(x).numpy()
    ref = tf.image.resize(x, (8, 8), "bilinear").numpy()
    assert np.abs(up - ref)[0, 1:-1, 1:-1].max() < 1e-6  # exact inside; the border is scaled, argmax kept

    model = build_model("unet", 3, depth=2, base_filters=4, downsample_input=2, upsample="resize_bilinear")
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ds = tf.data.Dataset.from_generator(
        lambda: iter([(_rgb(2, 32, 48), np.zeros((2, 32, 48), "int32"))]),
        output_signature=(tf.TensorSpec((None, None, None, 3)), tf.TensorSpec((None, None, None), tf.int32)))
    history = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_unet_decoder_filters_set_the_decoder_widths_only():
    plain = build_model("unet", 3, depth=3, base_filters=8, decoder_convs=1)
    narrow = build_model("unet", 3, depth=3, base_filters=8, decoder_convs=1, decoder_filters=[6, 4, 2])
    widths = lambda m, part: [l.filters for l in m.layers if l.name.startswith(part) and hasattr(l, "filters")]
    assert widths(plain, "dec") != widths(narrow, "dec")
    assert [widths(narrow, f"dec{n}_1")[0] for n in (1, 2, 3)] == [6, 4, 2]
    assert widths(narrow, "enc") == widths(plain, "enc")  # the encoder is untouched
    one = build_model("unet", 3, depth=3, base_filters=8, decoder_convs=1, decoder_filters=5)
    assert [widths(one, f"dec{n}_1")[0] for n in (1, 2, 3)] == [5, 5, 5]
    assert narrow.count_params() < plain.count_params()
    with pytest.raises(ModelError, match="decoder_filters"):
        build_model("unet", 3, depth=3, base_filters=8, decoder_filters=[4, 4])
