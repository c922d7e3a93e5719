"""Training with a pretrained encoder (segcli.models.encoders): --encoder / --encoder-weights, the recipe key
freeze_encoder_epochs, and what is refused. Never downloads: the weights file is saved from a backbone built
with weights=None; "imagenet" is tried with Keras' download made to fail."""

import numpy as np
import pytest

from segcli import recipe as recipes
from test_export import ONNX_MISSING
from test_train import rows, tiny_recipe

ENCODER = "mobilenetv3small"  # the cheapest backbone


@pytest.fixture
def weights_file(tmp_path):
    from segcli.models import build_backbone

    path = tmp_path / "mbv3s.weights.h5"
    backbone = build_backbone(ENCODER)  # random init, as a user's offline file would hold ImageNet's
    backbone.save_weights(path)
    return path


def file_weights(path) -> dict:
    """layer name -> weights of the backbone loaded from ``path``."""
    from segcli.models import build_backbone

    return {layer.name: layer.get_weights() for layer in build_backbone(ENCODER, path).layers if layer.weights}


def same(encoder_weights: dict, expected: dict) -> bool:
    assert encoder_weights.keys() == expected.keys()
    return all(len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
               for name in expected for a, b in [(encoder_weights[name], expected[name])])


@pytest.mark.slow
def test_encoder_from_file_frozen_for_one_epoch_then_trained(cli, sample_data, tmp_path, weights_file, monkeypatch):
    """`train unet DATA --encoder mobilenetv3small --encoder-weights FILE --epochs 2` with freeze_encoder_epochs 1:
    the encoder starts as the file's weights, is unchanged by epoch 1 (BN statistics too) and changed by
    epoch 2; best.keras loads in plain Keras; the ONNX export passes its parity check."""
    import keras

    from segcli.models import encoder_of
    from segcli.training import callbacks

    snapshots = []
    on_epoch_end = callbacks.RunBackup.on_epoch_end

    def snapshot(self, epoch, logs=None):
        encoder = encoder_of(self.model)
        snapshots.append({layer.name: layer.get_weights() for layer in encoder.layers if layer.weights})
        on_epoch_end(self, epoch, logs)

    monkeypatch.setattr(callbacks.RunBackup, "on_epoch_end", snapshot)
    out = tmp_path / "run"
    recipe = tiny_recipe(tmp_path, epochs=1, extra="freeze_encoder_epochs = 1")
    result = cli("train", "unet", sample_data, "--recipe", recipe, "--encoder", ENCODER,
                 "--encoder-weights", weights_file, "--epochs", "2", "--out", out)
    assert result.exit_code == 0, result.output
    assert [int(r["epoch"]) for r in rows(out / "history.csv")] == [0, 1]
    assert len(snapshots) == 2
    initial = file_weights(weights_file)
    assert same(snapshots[0], initial)  # frozen: neither the kernels nor the BN statistics moved
    assert not same(snapshots[1], initial)  # unfrozen in epoch 2

    saved = recipes.load_resolved(out / "recipe.toml")
    assert saved.model.options == {"depth": 2, "base_filters": 4, "encoder": ENCODER,
                                   "encoder_weights": str(weights_file.resolve())}
    assert saved.train.freeze_encoder_epochs == 1
    model = keras.saving.load_model(out / "best.keras", compile=False)  # no segcli objects needed
    assert encoder_of(model) is not None
    assert model.predict(np.zeros((1, 64, 64, 3), "float32"), verbose=0).shape[:3] == (1, 64, 64)

    if ONNX_MISSING:
        pytest.skip(f"export extra not installed ({', '.join(ONNX_MISSING)})")
    exported = cli("export", out / "best.keras", "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert exported.exit_code == 0, exported.output  # segcli export runs its own parity check against Keras
    assert (tmp_path / "m.onnx").is_file()


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
