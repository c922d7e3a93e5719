"""Training end to end on sample_data with a tiny U-Net: run folder, metrics, resume, --force,
and MirroredStrategy over two logical CPUs matching one device."""

import csv
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_recipe

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--size", "64x64", "--batch-size", "8", "--precision", "float32"]
STEP_IMAGES = 3 * 8  # an epoch of sample_data's 30 train pairs at batch 8: 3 steps


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_train_writes_a_complete_run_folder(cli, sample_data, tmp_path):
    out = tmp_path / "run"
    started = time.perf_counter()
    result = cli("train", "unet", sample_data, "--recipe", tiny_recipe(tmp_path), "--out", out)
    wall = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    assert "run folder: " in result.stdout and "epoch 2/2: loss " in result.stdout  # segcli.progress, shown by the CLI
    for name in ("model.keras", "best.keras", "recipe.toml", "classes.json", "history.csv", "metrics.json",
                 "curves.png", "run.json"):
        assert (out / name).is_file(), name
    assert any((out / "logs").rglob("*tfevents*")), "TensorBoard logs missing"
    assert not (out / "backup").exists(), "the resume backup is removed after a finished run"
    history = rows(out / "history.csv")
    assert len(history) == 2
    assert {"loss", "val_loss", "val_pixel_accuracy", "val_miou", "val_iou_Road", "images_per_sec"} <= set(history[0])
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["val"]["pixel_accuracy"] <= 1.0 and 0.0 <= metrics["val"]["miou"] <= 1.0
    assert metrics["val"]["miou"] == pytest.approx(float(history[-1]["val_miou"]))
    assert metrics["precision"] == "float32"
    # the speed: each epoch's images/s is its steps' images over its train_seconds, which fit in the run the test
    # timed; metrics.json's is the mean of the epochs after the first
    seconds = [float(r["train_seconds"]) for r in history]
    assert [float(r["images_per_sec"]) * t for r, t in zip(history, seconds)] == pytest.approx([STEP_IMAGES] * 2)
    assert 0 < sum(seconds) <= wall and metrics["train_seconds"] == pytest.approx(sum(seconds))
    assert metrics["train_images_per_sec"] == pytest.approx(float(history[1]["images_per_sec"]))
    assert set(metrics["val"]["iou"]) == set(json.loads((sample_data / "classes.json").read_text())["classes"][i]["name"]
                                             for i in range(11))
    recipe = (out / "recipe.toml").read_text()
    assert "base_filters = 4" in recipe and "epochs = 2" in recipe

    from segcli.modelfile import load_model

    loaded = load_model(out / "best.keras")
    assert loaded.classes.names[3] == "Road" and loaded.output_stride == 4


def test_existing_run_folder_needs_force(cli, sample_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    keep = out / "keep.txt"
    keep.write_text("mine")
    result = cli("train", "unet", sample_data, "--recipe", tiny_recipe(tmp_path, epochs=1), "--out", out)
    assert result.exit_code == 2
    assert "--force" in result.output and "Traceback" not in result.output
    assert keep.read_text() == "mine"


@pytest.mark.slow
def test_force_replaces_the_run_folder(cli, sample_data, tmp_path):
    from segcli.files import mark_segcli_folder

    out = tmp_path / "run"
    out.mkdir()
    mark_segcli_folder(out, "run")  # a folder segcli made (tests/test_reliability.py: any other is refused)
    (out / "old.txt").write_text("old")
    result = cli("train", "unet", sample_data, "--recipe", tiny_recipe(tmp_path, epochs=1), "--out", out, "--force")
    assert result.exit_code == 0, result.output
    assert not (out / "old.txt").exists() and (out / "model.keras").is_file()


def test_bad_recipe_key_is_one_line(cli, sample_data, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepoch = 3\n")
    result = cli("train", "unet", sample_data, "--recipe", bad, "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert "unknown key 'epoch'" in result.output and "epochs" in result.output
    assert not (tmp_path / "r").exists()


def test_missing_data_dir_is_one_line(cli, tmp_path):
    result = cli("train", "unet", tmp_path / "nope", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "nope" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_gpu_defaults_train_on_cpu_and_save_a_float32_model(cli, sample_data, tmp_path):
    """What `auto` picks with a GPU (mixed_float16 with loss scaling, XLA, 8 steps per execution), run on the
    CPU: the run finishes, the loss falls, and model.keras holds float32 so it predicts at full speed on a CPU."""
    import keras

    out = tmp_path / "run"
    extra = 'jit = "true"\nsteps_per_execution = 8'
    recipe = tiny_recipe(tmp_path, epochs=3, extra=extra, precision="mixed_float16")
    result = cli("train", "unet", sample_data, "--recipe", recipe, "--out", out)
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert (run["precision"], run["jit"], run["steps_per_execution"]) == ("mixed_float16", True, 8)
    losses = [float(row["loss"]) for row in rows(out / "history.csv")]
    assert len(losses) == 3 and all(np.isfinite(losses)) and losses[-1] < losses[0]
    model = keras.saving.load_model(out / "model.keras", compile=False)
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}


MIRRORED_SCRIPT = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from segcli.training import train
out, data, recipe = sys.argv[1:4]
losses = {}
for mode in ("none", "mirrored"):
    result = train("lambda-fcn", data, recipe_file=recipe, out=f"{out}/{mode}",
                   overrides={"train": {"distribute": mode}})
    losses[mode] = {"loss": [float(r["loss"]) for r in result.history],
                    "val_loss": [float(r["val_loss"]) for r in result.history],
                    "strategy": result.metrics["strategy"]}
print(json.dumps(losses))
"""


@pytest.mark.slow
def test_mirrored_strategy_on_two_cpus_matches_one_device(sample_data, tmp_path):
    recipe = tmp_path / "m.toml"
    recipe.write_text(textwrap.dedent("""
        [data]
        size = [64, 64]
        flip = false
        scale = [1.0, 1.0]
        [train]
        epochs = 1
        batch_size = 8
        lr = 0.001
        precision = "float32"
    """))
    proc = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(tmp_path), str(sample_data), str(recipe)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "2 devices" in res["mirrored"]["strategy"]
    # One epoch, 3 steps of 8 images = 2 replicas x 4. Same data and updates; the sums run in another order
    # and each replica averages its loss over its own non-void pixels, so figures agree closely, not exactly
    # (measured: train loss 5e-4 relative, val loss after the 3 updates 7e-3).
    assert res["none"]["loss"] == pytest.approx(res["mirrored"]["loss"], rel=2e-3)
    assert res["none"]["val_loss"] == pytest.approx(res["mirrored"]["val_loss"], rel=2e-2)


MULTI_GPU_DEFAULTS_SCRIPT = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
# what segcli's automatic choices see on a machine with GPUs; the replicas are the two logical CPUs
physical = tf.config.list_physical_devices
tf.config.list_physical_devices = lambda kind=None: ["GPU:0", "GPU:1"] if kind == "GPU" else physical(kind)
import segcli.system
segcli.system.gpu_names = lambda: ["pretend GPU"] * 2
from segcli.training import train
out, data, recipe = sys.argv[1:4]
result = train("unet", data, recipe_file=recipe, out=out, overrides={"train": {"distribute": "mirrored"}})
print(json.dumps({"loss": [float(r["loss"]) for r in result.history], "strategy": result.metrics["strategy"]}))
"""


@pytest.mark.slow
def test_multi_gpu_defaults_train_under_mirrored_strategy(sample_data, tmp_path):
    """With GPUs, `auto` picks mixed_float16 (loss scaling) and, on one GPU, XLA and 8 steps per call; under
    MirroredStrategy those two stay off (Keras 3 fails on both there). Run on two logical CPUs, with segcli's
    device checks told there are GPUs."""
    recipe = tiny_recipe(tmp_path, epochs=2, precision="auto")
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", MULTI_GPU_DEFAULTS_SCRIPT, str(out), str(sample_data), str(recipe)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "2 devices" in res["strategy"]
    assert len(res["loss"]) == 2 and all(np.isfinite(res["loss"])) and res["loss"][1] < res["loss"][0]
    run = json.loads((out / "run.json").read_text())
    assert (run["precision"], run["jit"], run["steps_per_execution"]) == ("mixed_float16", False, 1)


def test_xla_with_a_distribution_strategy_is_refused_in_one_line(cli, sample_data, tmp_path):
    out = tmp_path / "run"
    result = cli("train", "unet", sample_data, "--recipe", tiny_recipe(tmp_path), "--distribute", "mirrored",
                 "--jit", "true", "--out", out)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "--jit true does not work" in result.stderr
    assert not out.exists()


METRICS_SCRIPT = """
import json
import numpy as np, tensorflow as tf, keras
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from segcli.models import build_model
from segcli.training.losses import make_loss
from segcli.training.metrics import segmentation_metrics
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32")
y = rng.integers(0, 4, (8, 32, 32)).astype("int32")
y[:, :4] = 255
keras.utils.set_random_seed(0)
weights = build_model("unet", 4, depth=2, base_filters=4).get_weights()
out = {}
for name, strategy in (("none", tf.distribute.get_strategy()),
                       ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
    with strategy.scope():
        model = build_model("unet", 4, depth=2, base_filters=4)
        model.set_weights(weights)
        model.compile(loss=make_loss("ce", 4, 255), metrics=segmentation_metrics(4, 255))
    out[name] = model.evaluate(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), verbose=0, return_dict=True)
out["numpy"] = float((model.predict(x, verbose=0).argmax(-1) == y)[y != 255].mean())
print(json.dumps(out))
"""


@pytest.mark.slow
def test_loss_and_metrics_under_mirrored_strategy_equal_one_device():
    """Same weights, same batches: the loss (scaled per replica, summed) and the confusion matrix (summed
    over replicas) must give the single-device figures."""
    proc = subprocess.run([sys.executable, "-c", METRICS_SCRIPT], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("loss", "pixel_accuracy", "miou"):
        assert res["mirrored"][key] == pytest.approx(res["none"][key], rel=1e-5), key
    assert res["none"]["pixel_accuracy"] == pytest.approx(res["numpy"], rel=1e-6)
