"""Training with a pretrained encoder (segcli.models.encoders): --encoder / --encoder-weights, the recipe keys
freeze_encoder_epochs and encoder_lr_mult, the resume of a freeze run, and what is refused. Never downloads: the
weights file is saved from a backbone built with weights=None; "imagenet" is tried with Keras' download made to fail.

This file is also a child's script (no TensorFlow imported at its top): `[python tests/no_tensorflow.py]
tests/test_encoder_training.py` prints the encoder_lr_mult check's figures on the process's Keras backend."""

import json
import signal
import sys

import numpy as np
import pytest

from conftest import child_result, run_on_backend, wait_for_exit
from segcli import recipe as recipes
from test_reliability import assert_complete, layer_weights, start_paused
from test_train import rows, tiny_recipe

ENCODER = "mobilenetv3small"  # the cheapest backbone


@pytest.fixture
def weights_file(tmp_path):
    from segcli.models import build_backbone

    path = tmp_path / "mbv3s.weights.h5"
    backbone = build_backbone(ENCODER)  # random init, as a user's offline file would hold ImageNet's
    backbone.save_weights(path)
    return path


def test_imagenet_without_network_is_one_line(cli, sample_data, tmp_path, monkeypatch):
    from keras.src.utils import file_utils

    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(file_utils, "get_file", no_network)
    out = tmp_path / "run"
    result = cli("train", "unet", sample_data, "--recipe", tiny_recipe(tmp_path), "--encoder", ENCODER,
                 "--encoder-weights", "imagenet", "--out", out)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--encoder-weights PATH" in lines[0] and "network unreachable" in lines[0]
    assert not out.exists()  # refused before the run folder is made


def test_bad_encoder_and_freeze_without_encoder_are_refused(cli, sample_data, tmp_path):
    result = cli("train", "unet", sample_data, "--encoder", "resnet5", "--out", tmp_path / "a")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "--encoder" in result.stderr and "resnet50" in result.stderr and "mobilenetv3small" in result.stderr

    recipe = tiny_recipe(tmp_path, extra="freeze_encoder_epochs = 2")  # unet's own vgg encoder
    result = cli("train", "unet", sample_data, "--recipe", recipe, "--out", tmp_path / "b")
    assert result.exit_code == 2
    assert "freeze_encoder_epochs" in result.stderr and "--encoder" in result.stderr
    recipe = tiny_recipe(tmp_path, extra="encoder_lr_mult = 0.1")
    result = cli("train", "unet", sample_data, "--recipe", recipe, "--out", tmp_path / "b")
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "encoder_lr_mult = 0.1 needs a pretrained encoder" in result.stderr and "--encoder" in result.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

    result = cli("compare", "unet", "fcn", sample_data, "--encoder", "nope", "--out", tmp_path / "c")
    assert result.exit_code == 2 and "--encoder" in result.stderr and not (tmp_path / "c").exists()


def test_encoder_weights_path_relative_to_the_recipe_file_or_the_working_directory(tmp_path, monkeypatch):
    folder = tmp_path / "recipes"
    folder.mkdir()
    recipe = folder / "r.toml"
    recipe.write_text(f'[model]\nname = "unet"\n[model.options]\nencoder = "{ENCODER}"\n'
                      'encoder_weights = "weights/b.weights.h5"\n[train]\nfreeze_encoder_epochs = 3\n')
    resolved = recipes.resolve(recipe)
    assert resolved.model.options["encoder_weights"] == str((folder / "weights" / "b.weights.h5").resolve())
    assert resolved.train.freeze_encoder_epochs == 3

    from segcli.cli.options import encoder_flags

    monkeypatch.chdir(tmp_path)
    assert encoder_flags(None, "x.h5") == {"encoder_weights": str((tmp_path / "x.h5").resolve())}
    assert encoder_flags(ENCODER, "ImageNet") == {"encoder": ENCODER, "encoder_weights": "ImageNet"}
    assert recipes.resolve(None, {"model": {"options": {"encoder": ENCODER, "encoder_weights": "ImageNet"}}}
                           ).model.options["encoder_weights"] == "imagenet"
    assert encoder_flags(None, None) is None


# --- encoder_lr_mult: the encoder's steps scaled, the rest's not, on every backend --------------------------------

LR, MULT, DECAY = 0.01, 0.1, 0.1


def tiny_encoder_net():
    """The encoder contract of segcli.models.encoders (one nested model named ENCODER_LAYER, here a conv and a
    BatchNormalization) with a 1x1 conv decoder: what the children on jax and torch step (a mobilenetv3small
    U-Net costs minutes of XLA compiles of its initializers on JAX)."""
    import keras

    from segcli.models import ENCODER_LAYER

    inner = keras.Input((None, None, 3))
    features = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3, padding="same")(inner))
    encoder = keras.Model(inner, features, name=ENCODER_LAYER)
    image = keras.Input((None, None, 3))
    return keras.Model(image, keras.layers.Conv2D(3, 1)(encoder(image)))


def _apply(optimizer, grads, variables):
    """One step as this backend's trainer takes it: JAX's a jitted stateless_apply, the others' apply."""
    import keras

    if keras.backend.backend() != "jax":
        optimizer.apply(grads, variables)
        return
    import jax

    if not optimizer.built:
        optimizer.build(variables)
    values, state = jax.jit(optimizer.stateless_apply)([v.value for v in optimizer.variables], grads,
                                                      [v.value for v in variables])
    for variable, value in zip([*variables, *optimizer.variables], [*values, *state]):
        variable.assign(value)


def lr_mult_figures(model, optimizer_for) -> dict:
    """For adamw with weight decay (one step) and sgd with Nesterov momentum (two steps): the same fixed gradients
    applied from the same weights with optimizer_for(name, 1.0) and optimizer_for(name, MULT). Per optimizer: how
    far the encoder's and the decoder's variables moved with 1.0, and how far the encoder's change with MULT is
    from MULT times it and the decoder's from it (the largest absolute differences)."""
    import keras

    from segcli.models import encoder_of

    trainable = list(model.trainable_variables)
    encoder_ids = {id(v) for v in encoder_of(model).trainable_variables}  # by identity, not by name
    inside = [id(v) in encoder_ids for v in trainable]
    initial = [np.array(v) for v in trainable]
    rng = np.random.default_rng(15)
    grads = [keras.ops.convert_to_tensor(rng.standard_normal(tuple(v.shape)).astype("float32")) for v in trainable]
    figures = {}
    for name, steps in (("adamw", 1), ("sgd", 2)):
        change = {}
        for mult in (1.0, MULT):
            for variable, value in zip(trainable, initial):
                variable.assign(value)
            optimizer = optimizer_for(name, mult)
            for _ in range(steps):
                _apply(optimizer, grads, trainable)
            change[mult] = [np.array(v) - w for v, w in zip(trainable, initial)]

        def most(values, where):
            return max(float(np.abs(x).max()) for x, flag in zip(values, inside) if flag == where)

        figures[name] = {
            "encoder_moved": most(change[1.0], True), "decoder_moved": most(change[1.0], False),
            "encoder_error": most([b - MULT * a for a, b in zip(change[1.0], change[MULT])], True),
            "decoder_error": most([b - a for a, b in zip(change[1.0], change[MULT])], False),
            "encoder_variables": sum(inside), "decoder_variables": len(inside) - sum(inside),
        }
    return figures


def assert_scaled(figures):
    assert figures.keys() == {"adamw", "sgd"}
    for name, f in figures.items():
        assert f["encoder_variables"] and f["decoder_variables"], (name, f)
        assert f["encoder_moved"] > 1e-3 and f["decoder_moved"] > 1e-3, (name, f)  # both were stepped
        # Adam's step, the weight decay (lr * DECAY * weight: unscaled, the encoder would be ~1e-4 off) and SGD's
        # momentum are linear in the learning rate: the encoder's change is MULT times, up to float32 rounding of
        # weights of size ~1 (1e-7), the rest's the same
        assert f["encoder_error"] < 1e-6, (name, f)
        assert f["decoder_error"] < 1e-7, (name, f)


def test_encoder_lr_mult_scales_the_encoders_steps_alone():
    """On TensorFlow in this process, through the recipe and compile_for_training (as `segcli train` compiles):
    a mobilenetv3small U-Net's encoder moves MULT times as far, its decoder as far as with 1.0."""
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the in-process check runs on TensorFlow; jax and torch run in children below")
    from segcli.data import default_classes
    from segcli.models import build_model
    from segcli.training.compile import compile_for_training

    options = {"depth": 2, "base_filters": 4, "encoder": ENCODER}
    model = build_model("unet", 3, **options)

    def optimizer_for(name, mult):
        recipe = recipes.resolve({"model": {"name": "unet", "options": options},
                                  "train": {"optimizer": name, "lr": LR, "weight_decay": DECAY if name == "adamw"
                                            else 0.0, "encoder_lr_mult": mult}})
        compile_for_training(model, recipe, default_classes(3), 10, metrics=False, gpu=False)
        return model.optimizer

    assert_scaled(lr_mult_figures(model, optimizer_for))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_encoder_lr_mult_on_jax_and_torch(backend):
    """The same check in a child on jax (the jitted stateless_apply its trainer calls) and on torch (Keras' fused
    torch optimizers), TensorFlow hidden, on a tiny net with the encoder contract."""
    from segcli import backend as backends

    if not backends.installed(backend):
        pytest.skip(f"{backend} is not installed")
    out = child_result(run_on_backend(backend, __file__, timeout=300))
    assert out["backend"] == backend and not out["tensorflow_imported"]
    assert_scaled(out["figures"])


# --- resuming a freeze run --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_freeze_run_killed_after_its_frozen_epoch_resumes_training_the_encoder(cli, sample_data, tmp_path,
                                                                              weights_file):
    """`train unet DATA --encoder mobilenetv3small --encoder-weights FILE` with freeze_encoder_epochs 1 of 2 epochs
    (encoder_lr_mult 0.5): killed (SIGKILL) as epoch 2 begins, the encoder unfrozen (a kill mid-epoch is
    test_reliability's), the backup holds epoch 1 with the file's encoder untouched (kernels and BN statistics);
    `train --resume` trains epoch 2 alone, the encoder included (it moves from the backup's), and finishes the run
    with every epoch once, with the losses of a run never stopped; best.keras loads in plain Keras and its ONNX
    export passes segcli's parity check."""
    out = tmp_path / "run"
    recipe = tiny_recipe(tmp_path, epochs=2, extra="freeze_encoder_epochs = 1\nencoder_lr_mult = 0.5")
    proc = start_paused("epoch:1", ["unet", sample_data, "--recipe", recipe, "--encoder", ENCODER,
                                    "--encoder-weights", weights_file, "--out", out], tmp_path / "paused")
    proc.send_signal(signal.SIGKILL)
    wait_for_exit(proc, "the killed training to end", 60)
    state = json.loads((out / "backup" / "state.json").read_text())
    assert state["epoch"] == 1 and [int(r["epoch"]) for r in rows(out / "history.csv")] == [0]

    def encoder_part(weights: dict) -> dict:  # the nested encoder's variables, by their path in the backbone
        prefix = "functional/layers/"
        return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}

    backup = encoder_part(layer_weights(out / "backup" / state["weights"]))
    initial = layer_weights(weights_file)
    assert backup.keys() == initial.keys()
    assert all(np.array_equal(backup[k], initial[k]) for k in initial)  # frozen: kernels and BN statistics

    result = cli("train", "--resume", out)
    assert result.exit_code == 0, result.output
    assert "epochs 2-2: encoder trainable" in result.output and "frozen" not in result.output
    assert_complete(out, epochs=2)
    assert float(rows(out / "history.csv")[0]["loss"]) == pytest.approx(state["history"][0]["loss"])  # kept
    # both epochs are those of the same run never stopped: each phase's fit picks the data stream up where the
    # epochs before it left it (not at its start), resumed or not
    straight = cli("train", "unet", sample_data, "--recipe", recipe, "--encoder", ENCODER, "--encoder-weights",
                   weights_file, "--out", tmp_path / "straight")
    assert straight.exit_code == 0, straight.output
    losses = [[float(r[key]) for r in rows(folder / "history.csv") for key in ("loss", "val_loss")]
              for folder in (out, tmp_path / "straight")]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    trained = encoder_part(layer_weights(out / "model.keras"))
    assert trained.keys() == backup.keys()
    moved = [k for k in backup if not np.array_equal(trained[k], backup[k])]
    assert any("conv" in k for k in moved), moved  # epoch 2 trained the encoder's kernels (not only BN statistics)

    saved = recipes.load_resolved(out / "recipe.toml")
    assert saved.model.options == {"depth": 2, "base_filters": 4, "encoder": ENCODER,
                                   "encoder_weights": str(weights_file.resolve())}
    assert saved.train.freeze_encoder_epochs == 1 and saved.train.encoder_lr_mult == 0.5
    import keras

    from segcli.models import encoder_of

    model = keras.saving.load_model(out / "best.keras", compile=False)  # no segcli objects needed
    assert encoder_of(model) is not None
    assert model.predict(np.zeros((1, 64, 64, 3), "float32"), verbose=0).shape[:3] == (1, 64, 64)

    from test_export import ONNX_MISSING  # imports TensorFlow: not at the top (this file is a child's script)

    if ONNX_MISSING:
        pytest.skip(f"export extra not installed ({', '.join(ONNX_MISSING)})")
    exported = cli("export", out / "best.keras", "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert exported.exit_code == 0, exported.output  # segcli export runs its own parity check against Keras
    assert (tmp_path / "m.onnx").is_file()


if __name__ == "__main__":  # the child of test_encoder_lr_mult_on_jax_and_torch
    import keras

    from segcli.models import encoder_of
    from segcli.training.optim import make_optimizer

    net = tiny_encoder_net()

    def make(name, mult):
        train = recipes.TrainSpec(optimizer=name, lr=LR, weight_decay=DECAY if name == "adamw" else 0.0,
                                  encoder_lr_mult=mult)
        return make_optimizer(train, 10, encoder_of(net).weights)

    print("RESULT" + json.dumps({"backend": keras.backend.backend(), "figures": lr_mult_figures(net, make),
                                 "tensorflow_imported": "tensorflow" in sys.modules}))
