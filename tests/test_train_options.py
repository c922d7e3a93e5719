"""Training options that generalise (issue 31): the weights' moving average (ema_momentum), training on val too
(train_splits), and their flags with --loss ohem and --scale. The OHEM loss's values are checked against NumPy on
every backend in tests/test_backend_ops.py."""

import json
import math

import numpy as np
import pytest
from conftest import tiny_recipe


def _weights(path):
    from segcli.modelfile import load_model

    return load_model(path, precision="float32").model.get_weights()


def _same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def _train(sample_data, tmp_path, name, extra, epochs=1):
    from segcli.training import train

    folder = tmp_path / name
    folder.mkdir()
    return train(None, sample_data, recipe_file=tiny_recipe(folder, epochs=epochs, extra=extra), out=folder / "run")


@pytest.mark.slow
def test_ema_validates_and_saves_the_moving_average(sample_data, tmp_path):
    plain = _train(sample_data, tmp_path, "plain", "")
    averaged = _train(sample_data, tmp_path, "ema", "ema_momentum = 0.5")
    # best.keras (saved at the epoch's end with the average swapped in) equals model.keras (the average Keras
    # writes into the model when fit ends); without the swap best.keras would hold the trained weights
    assert _same(_weights(averaged.run_dir / "best.keras"), _weights(averaged.run_dir / "model.keras"))
    # the same seed trains the same steps: what differs from the plain run is the average
    assert not _same(_weights(averaged.run_dir / "model.keras"), _weights(plain.run_dir / "model.keras"))
    # the plain run's two files are its trained weights: EMA off changes nothing
    assert _same(_weights(plain.run_dir / "best.keras"), _weights(plain.run_dir / "model.keras"))


@pytest.mark.slow
def test_train_splits_with_val_trains_on_both_and_reports_no_val_score(sample_data, tmp_path):
    result = _train(sample_data, tmp_path, "both", "", epochs=1)
    from segcli.training import train

    folder = tmp_path / "with-val"
    folder.mkdir()
    recipe = tiny_recipe(folder, epochs=1)
    recipe.write_text(recipe.read_text().replace("[data]\n", '[data]\ntrain_splits = ["train", "val"]\n'))
    notes = []

    class Notes:
        def __getattr__(self, name):
            return lambda *args, **kwargs: notes.append(args[0]) if name == "note" else None

    run = train(None, sample_data, recipe_file=recipe, out=folder / "run", progress=Notes())
    info = json.loads((run.run_dir / "run.json").read_text())
    plain_info = json.loads((result.run_dir / "run.json").read_text())
    assert info["val_pairs"] == 0 and info["train_pairs"] == plain_info["train_pairs"] + plain_info["val_pairs"]
    assert math.isnan(run.metrics["val"]["miou"]) and run.metrics["best_epoch"] is None
    assert any("no val score" in note for note in notes)
    assert _same(_weights(run.run_dir / "best.keras"), _weights(run.run_dir / "model.keras"))


def test_training_option_flags_reach_the_recipe():
    from segcli.cli.options import list_flag, overrides
    from segcli.recipe import resolve

    recipe = resolve(None, overrides(data={"scale": list_flag("0.5,2.0"), "train_splits": list_flag("train,val")},
                                     train={"loss": "ohem", "ema_momentum": "0.99"}))
    assert recipe.data.scale == (0.5, 2.0) and recipe.data.train_splits == ("train", "val")
    assert recipe.train.loss == "ohem" and recipe.train.ema_momentum == 0.99


@pytest.mark.parametrize("flags, words", [
    (["--train-splits", "val"], "--train-splits"),
    (["--train-splits", "train,test"], "--train-splits"),
    (["--ema-momentum", "1"], "--ema-momentum"),
    (["--loss", "hard"], "--loss"),
    (["--scale", "2,0.5"], "--scale"),
])
def test_bad_training_option_flags_are_one_line(cli, sample_data, tmp_path, flags, words):
    result = cli("train", "unet", sample_data, *flags, "--out", tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_ohem_recipe_keys_are_checked(tmp_path):
    from segcli.errors import SegcliError
    from segcli.recipe import resolve

    for key, value in (("ohem_threshold", 0), ("ohem_threshold", 1.5), ("ohem_min_kept", 0)):
        with pytest.raises(SegcliError, match=key):
            resolve({"train": {key: value}})
    recipe = resolve({"train": {"loss": "ohem", "ohem_threshold": 0.9, "ohem_min_kept": 0.1}})
    assert (recipe.train.ohem_threshold, recipe.train.ohem_min_kept) == (0.9, 0.1)


def test_ohem_and_ema_settings_reach_the_compiled_model():
    from segcli.data import default_classes
    from segcli.models import build_model
    from segcli.recipe import resolve
    from segcli.training.compile import compile_for_training

    recipe = resolve({"model": {"name": "unet", "options": {"depth": 2, "base_filters": 4}},
                      "train": {"loss": "ohem", "ohem_threshold": 0.9, "ohem_min_kept": 0.1, "ema_momentum": 0.95}})
    model = build_model("unet", 3, depth=2, base_filters=4)
    compile_for_training(model, recipe, default_classes(3), steps_per_epoch=4, gpu=False)
    loss = model.loss
    assert (loss.kind, loss.ohem_threshold, loss.ohem_min_kept) == ("ohem", 0.9, 0.1)
    assert model.optimizer.use_ema and model.optimizer.ema_momentum == 0.95


def test_aux_head_reads_the_last_feature_map_at_its_stride_and_its_scores_in_float32():
    import keras

    from segcli.errors import SegcliError
    from segcli.models import build_model
    from segcli.precision import policy
    from segcli.training.aux import feature_at_stride, with_aux_head

    for name, options in (("fcn", dict(filters=[4, 8, 8, 8], downsample_input=2)), ("unet", dict(depth=3, base_filters=4))):
        with policy("mixed_bfloat16"):
            model = build_model(name, 5, **options)
            trained = with_aux_head(model, 5, 8)
        tapped = feature_at_stride(model, 8)
        fixed = keras.models.clone_model(model, input_tensors=keras.Input((64, 64, 3)))
        assert fixed.get_layer(tapped).output.shape[1:3] == (8, 8), (name, tapped)
        # nothing later in the graph has that size: the deepest feature map at stride 8
        later = [l for l in fixed.layers[fixed.layers.index(fixed.get_layer(tapped)) + 1:]
                 if isinstance(l.output, keras.KerasTensor) and len(l.output.shape) == 4 and l.output.shape[1] == 8
                 and not l.name.startswith(("score", "fuse", "up_", "logits"))]
        assert later == [], (name, [l.name for l in later])
        assert trained.output.shape[-1] == 10 and model.output.shape[-1] == 5
        assert trained.get_layer("aux_score").compute_dtype == "float32"
        assert trained.get_layer("aux_head_conv").compute_dtype == "bfloat16"
        out = trained.predict(np.zeros((1, 64, 64, 3), "float32"), verbose=0)
        assert out.shape == (1, 64, 64, 10)
        np.testing.assert_allclose(out[..., :5], model.predict(np.zeros((1, 64, 64, 3), "float32"), verbose=0),
                                   atol=1e-6)  # the same layers, shared: the first half is the model's output
    with pytest.raises(SegcliError, match="aux_stride = 32"):
        feature_at_stride(build_model("unet", 5, depth=2, base_filters=4), 32)


def test_aux_loss_adds_the_heads_loss_with_its_weight_and_metrics_read_the_models_scores():
    from segcli.training.losses import make_loss
    from segcli.training.metrics import confusion_update

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (2, 6, 8)).astype("int32")
    main, aux = (rng.normal(size=(2, 6, 8, 4)).astype("float32") for _ in range(2))
    both = np.concatenate([main, aux], axis=-1)
    plain = make_loss("ce", 4, None)
    with_aux = make_loss("ce", 4, None, aux_weight=0.4)
    assert float(with_aux(labels, both)) == pytest.approx(float(plain(labels, main)) + 0.4 * float(plain(labels, aux)),
                                                          rel=1e-5)
    np.testing.assert_array_equal(np.asarray(confusion_update(labels, both, 4, None)),
                                  np.asarray(confusion_update(labels, main, 4, None)))


@pytest.mark.slow
def test_a_run_with_an_aux_head_saves_the_model_without_it(sample_data, tmp_path):
    from segcli.modelfile import load_model

    run = _train(sample_data, tmp_path, "aux", "aux_weight = 0.4\naux_stride = 4")
    for name in ("model.keras", "best.keras"):
        model = load_model(run.run_dir / name, precision="float32").model
        assert len(model.outputs) == 1 and model.outputs[0].shape[-1] == 11
        assert not [layer.name for layer in model.layers if layer.name.startswith("aux")]
    assert math.isfinite(run.metrics["val"]["miou"])


@pytest.mark.slow
def test_ema_with_a_frozen_encoder_phase_trains_both_phases_and_saves_the_average(cli, sample_data, tmp_path):
    """Keras writes the average into the model's trainable weights when a fit ends, which the frozen phase's fit
    cannot (fewer trainable weights than averages) and which would start the next phase from the average:
    segcli switches that off and swaps the average in for its saves."""
    from segcli.models import build_backbone

    weights = tmp_path / "mbv3s.weights.h5"
    build_backbone("mobilenetv3small").save_weights(weights)
    recipe = tiny_recipe(tmp_path, epochs=2, extra="freeze_encoder_epochs = 1\nema_momentum = 0.5")
    result = cli("train", "unet", sample_data, "--recipe", recipe, "--encoder", "mobilenetv3small",
                 "--encoder-weights", weights, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "epochs 2-2: encoder trainable" in result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    if metrics["best_epoch"] == 2:  # the last epoch's average is both files
        assert _same(_weights(tmp_path / "run" / "best.keras"), _weights(tmp_path / "run" / "model.keras"))
