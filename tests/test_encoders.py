"""segcli.models.encoders: keras.applications backbones as FCN/U-Net encoders. Never downloads: backbones are
built with weights=None, and Keras' download function is replaced wherever "imagenet" is asked for."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from keras.src.utils import file_utils  # noqa: E402  (what keras.applications downloads through)

from segcli.errors import ModelError  # noqa: E402
from segcli.models import (build_backbone, build_fcn, build_model, build_unet, count_params,  # noqa: E402
                           decoder_variables, encoder_info, encoder_of, encoder_variables, gflops, list_encoders,
                           output_stride, set_encoder_trainable)
from segcli.models.encoders import BACKBONES, PREPROCESS_LAYER, encoder_model, feature_layers  # noqa: E402

SMALL = "mobilenetv3small"
# published multiply-accumulates per 224x224 image (the papers / Keras docs), classifier excluded
MACS_224 = {"vgg16": 15.4e9, "resnet50": 4.1e9, "mobilenetv3small": 0.056e9, "mobilenetv3large": 0.217e9,
            "efficientnetb0": 0.39e9, "efficientnetv2b0": 0.72e9}


def _rgb(n, h, w, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, h, w, 3)).astype("float32")


def _same(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b, strict=True))


def test_encoder_names():
    assert {"vgg16", "resnet50", "mobilenetv3small", "mobilenetv3large", "efficientnetb0",
            "efficientnetv2b0"} <= set(list_encoders())
    with pytest.raises(ModelError) as exc:
        build_unet(3, encoder="resnet18")
    assert all(name in str(exc.value) for name in list_encoders()) and "vgg" in str(exc.value)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BACKBONES))
def test_feature_strides_and_imagenet_file(name, monkeypatch):
    """Every backbone: the taps are at strides 2, 4, 8, 16, 32, and "imagenet" asks Keras for the file the
    table (and so the offline error) names. The download and the load are replaced: nothing is fetched."""
    asked = []
    monkeypatch.setattr(file_utils, "get_file", lambda fname, origin, **kw: asked.append((fname, origin)) or fname)
    monkeypatch.setattr(keras.Model, "load_weights", lambda self, path, *a, **kw: None)
    backbone = build_backbone(name, "imagenet")
    spec = BACKBONES[name]
    assert asked == [(spec.weights_file, spec.weights_url + spec.weights_file)]

    for fcn in (False, True):
        encoder = encoder_model(name, fcn=fcn, backbone=backbone)
        outs = encoder(_rgb(1, 64, 64), training=False)
        assert [tuple(o.shape[1:3]) for o in outs] == [(64 // s, 64 // s) for s in (2, 4, 8, 16, 32)]
        assert output_stride(encoder) == 32
    names = feature_layers(name, backbone)
    assert names[-1] == backbone.layers[-1].name and len(set(names)) == 5
    assert [n for n in spec.features if not n.endswith(">")] == [n for n in names[:4] if n in spec.features]
    # GFLOPs through nested models and depthwise convs: within 15% of the published MACs
    assert gflops(encoder_model(name, backbone=backbone), 224, 224) == pytest.approx(2 * MACS_224[name] / 1e9,
                                                                                     rel=0.15)


def test_encoder_info():
    info = encoder_info(SMALL, 224, 224)
    assert info["channels"] == [16, 72, 96, 288, 576]
    assert info["params"] == count_params(build_backbone(SMALL))
    assert 0.09 < info["gflops"] < 0.13 and info["weights_file"] == BACKBONES[SMALL].weights_file
    assert info["feature_layers"][0] != "conv_bn"  # the activation after it


@pytest.mark.slow
def test_unet_and_fcn_on_a_small_encoder(tmp_path):
    from segcli.inference import predict_batch

    for builder, options in ((build_unet, dict(base_filters=4, convs_per_block=1, bn_momentum=0.9)),
                             (build_fcn, dict(upsample="resize_bilinear"))):
        model = builder(5, encoder=SMALL, **options)
        assert output_stride(model) == 32 and model.outputs[0].dtype == "float32"
        assert encoder_of(model) is not None and encoder_of(model).name == "encoder"
        assert gflops(model, 64, 64) > gflops(encoder_of(model), 64, 64) > 0.005
        x = _rgb(2, 64, 64)
        want = np.asarray(model(x, training=False))
        assert want.shape == (2, 64, 64, 5)
        if builder is build_unet:
            bns = [l for l in encoder_of(model).layers if isinstance(l, keras.layers.BatchNormalization)]
            assert bns and {l.momentum for l in bns} == {0.9}  # bn_momentum reaches the backbone
            assert predict_batch(model, _rgb(1, 72, 100)).shape == (1, 72, 100, 5)  # padded to 96x128
        else:
            assert model(_rgb(1, 96, 128), training=False).shape == (1, 96, 128, 5)
        model.save(tmp_path / "m.keras")
        loaded = keras.saving.load_model(tmp_path / "m.keras")  # plain Keras, no custom objects
        np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), want)
        assert encoder_of(loaded) is not None


def test_caffe_preprocessing_is_a_frozen_stock_layer():
    model = build_fcn(3, encoder="vgg16", variant="fcn32s")
    layer = model.get_layer(PREPROCESS_LAYER)
    assert type(layer) is keras.layers.Conv2D and not layer.trainable
    x = _rgb(1, 32, 32)
    got = np.asarray(keras.Model(model.inputs, layer.output)(x))
    want = keras.applications.imagenet_utils.preprocess_input(x.copy(), mode="caffe")
    np.testing.assert_allclose(got, want, atol=1e-4)
    # FCN-8s on VGG16 fuses pool3 / pool4 / pool5, as in the paper
    assert feature_layers("vgg16", build_backbone("vgg16"), fcn=True)[2:] == ["block3_pool", "block4_pool",
                                                                             "block5_pool"]


@pytest.mark.slow
def test_freezing_keeps_encoder_and_its_batchnorm_fixed():
    model = build_fcn(4, encoder=SMALL, bn_momentum=0.5)
    x, y = _rgb(2, 64, 64, seed=1), np.random.default_rng(2).integers(0, 4, (2, 64, 64)).astype("int32")
    encoder = encoder_of(model)

    def step():
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True)
        model.train_on_batch(x, y)

    assert set_encoder_trainable(model, False) and encoder_variables(model) == []
    enc_before = [np.array(w) for w in encoder.weights]  # BN moving statistics included
    dec_before = [np.array(v) for v in decoder_variables(model)]
    step()
    assert _same(enc_before, encoder.weights)  # nothing moved: BN ran in inference mode
    assert not _same(dec_before, decoder_variables(model))

    assert set_encoder_trainable(model, True)
    assert len(encoder_variables(model)) + len(decoder_variables(model)) == len(model.trainable_variables)
    step()
    moving = [i for i, w in enumerate(encoder.weights) if "moving_mean" in w.path]
    assert moving and not any(np.array_equal(enc_before[i], encoder.weights[i]) for i in moving[:3])
    assert not set_encoder_trainable(build_unet(3, depth=2, base_filters=4), False)  # no encoder: no-op


@pytest.mark.slow
@pytest.mark.parametrize("builder,suffix", [(build_unet, ".weights.h5"), (build_fcn, "_notop.h5")])
def test_encoder_weights_file_loads_exactly(tmp_path, builder, suffix):
    source = build_backbone(SMALL)
    path = tmp_path / f"small{suffix}"
    if suffix == ".weights.h5":
        source.save_weights(path)
    else:  # the legacy HDF5 layout Keras' _notop.h5 downloads have
        import h5py
        from keras.src.legacy.saving import legacy_h5_format
        with h5py.File(path, "w") as fh:
            legacy_h5_format.save_weights_to_hdf5_group(fh, source)
    x = _rgb(1, 64, 64)
    options = dict(base_filters=4, convs_per_block=1) if builder is build_unet else {}
    model = builder(3, encoder=SMALL, encoder_weights=str(path), **options)
    got = encoder_of(model)(x, training=False)[-1]
    np.testing.assert_array_equal(np.asarray(got), np.asarray(source(x, training=False)))
    fresh = builder(3, encoder=SMALL, **options)  # random init differs, so the test can fail
    assert not np.array_equal(np.asarray(encoder_of(fresh)(x, training=False)[-1]), np.asarray(got))


def test_wrong_weights_files_are_one_line_errors(tmp_path):
    other = tmp_path / "other.weights.h5"
    build_unet(3, depth=2, base_filters=4).save_weights(other)
    junk = tmp_path / "junk_notop.h5"
    junk.write_text("not hdf5")
    text = tmp_path / "weights.txt"
    text.write_text("x")
    for path, words in ((other, "does not fit"), (junk, "does not fit"), (text, "not a weights file"),
                        (tmp_path / "missing.h5", "no such")):
        with pytest.raises(ModelError) as exc:
            build_fcn(3, encoder=SMALL, encoder_weights=path)
        msg = str(exc.value)
        assert "\n" not in msg and str(path) in msg and words in msg, msg
    with pytest.raises(ModelError, match="needs a pretrained encoder"):
        build_unet(3, depth=2, base_filters=4, encoder_weights="imagenet")
    with pytest.raises(ModelError, match="encoder_weights must be"):
        build_fcn(3, encoder=SMALL, encoder_weights=3)


def test_imagenet_without_network_is_one_line_naming_the_file(monkeypatch):
    asked = []

    def offline(fname, origin, **kw):  # what keras' get_file raises when the URL cannot be fetched
        asked.append(fname)
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(ModelError) as exc:
        build_model("unet", 3, encoder=SMALL, encoder_weights="imagenet")
    msg = str(exc.value)
    spec = BACKBONES[SMALL]
    assert asked == [spec.weights_file]
    assert "\n" not in msg and spec.weights_file in msg and spec.weights_url in msg
    assert "--encoder-weights PATH" in msg and ".keras/models" in msg and "URL fetch failure" in msg


def test_models_show_names_the_imagenet_weights_file_for_offline_users(cli):
    spec = BACKBONES[SMALL]
    result = cli("models", "show", "unet", "--encoder", SMALL, "--size", "64x64")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if line.startswith("ImageNet weights"))
    assert spec.weights_file in line and spec.weights_url + spec.weights_file in line
    assert "--encoder-weights PATH" in line and ".keras/models" in line
    plain = cli("models", "show", "unet", "--size", "64x64")
    assert plain.exit_code == 0 and "ImageNet weights" not in plain.stdout


def test_mixed_precision_encoder_net_has_float32_logits():
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        model = build_fcn(3, encoder=SMALL, variant="fcn32s")
        assert model.outputs[0].dtype == "float32"
        assert any(l.compute_dtype == "bfloat16" for l in encoder_of(model).layers if l.weights)
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.slow
def test_efficientnet_notop_file_normalises_like_keras_imagenet_model(tmp_path):
    """Keras' efficientnetb0_notop.h5 stores the ImageNet std as the Normalization variance (tensorflow
    issue 49930); loaded from a file, the input must still come out as (x/255 - mean) / std."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    source = build_backbone("efficientnetb0")
    norm = next(l for l in source.layers if isinstance(l, keras.layers.Normalization))
    norm.adapt_mean.assign(mean.reshape(norm.adapt_mean.shape))
    norm.adapt_variance.assign(std.reshape(norm.adapt_variance.shape))  # as in Keras' file
    path = tmp_path / "efficientnetb0_notop.h5"
    with h5py.File(path, "w") as fh:
        legacy_h5_format.save_weights_to_hdf5_group(fh, source)
    loaded = build_backbone("efficientnetb0", path)
    norm = next(l for l in loaded.layers if isinstance(l, keras.layers.Normalization))
    x = _rgb(1, 8, 8)
    got = np.asarray(keras.Model(loaded.inputs[0], norm.output)(x))
    np.testing.assert_allclose(got, (x / 255 - mean) / std, rtol=1e-4, atol=1e-4)
