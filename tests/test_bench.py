"""`segcli bench`: the --quick run end to end (every figure finite and positive, tables printed), on jax and
torch without TensorFlow, the PyTorch reference (the same nets as Keras', beside segcli's fit), the GPU
defaults (precisions, XLA), the benchmark's datasets and bad options."""

import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import run_on_backend, script_module
from segcli import bench

ROOT = Path(__file__).resolve().parents[1]
ALL_SECTIONS = ",".join(bench.SECTIONS)



def torch_reference():
    """benchmarks/torch_reference.py as a module (benchmarks/ is not a package)."""
    pytest.importorskip("torch")
    return script_module("benchmarks/torch_reference.py")


def figures(obj, path="$"):
    """(path, value) for every number in a JSON document (booleans are flags, not figures)."""
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield path, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from figures(value, f"{path}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from figures(value, f"{path}[{i}]")


# --- the test's own clock ---------------------------------------------------------------------------------------
# The bench's figures are checked against timings this test takes itself, around the Keras calls the bench times:
# a figure must say what the test measured (work / seconds) within a wide margin for the few Python calls between
# the bench's clock and the test's. No figure is compared with a speed: the machine may be as slow as it likes.

def agrees(work: float, rate: float, seconds: float, rel: float = 0.15, slack: float = 0.02) -> bool:
    """Whether `rate` (work per second, as the bench reports it) took about the `seconds` the test measured."""
    return seconds * (1 - rel) - slack <= work / rate <= seconds * (1 + rel) + slack


@dataclass
class Clock:
    """What the test timed: per fit timed by segcli's Throughput callback, each epoch's (steps, seconds of the
    training steps, validation left out); each predict_on_batch call's (input shape, start, end); each
    keras.ops.matmul call's (dtype, shape, start, end)."""

    fits: list = field(default_factory=list)
    predicts: list = field(default_factory=list)
    matmuls: list = field(default_factory=list)


@pytest.fixture
def clock(monkeypatch):
    """Clock, filled while the test runs: keras.Model.fit gets an epoch clock beside each Throughput callback,
    predict_on_batch and keras.ops.matmul are timed call by call."""
    import keras
    import numpy as np

    record = Clock()

    class EpochClock(keras.callbacks.Callback):
        def __init__(self, epochs: list):
            super().__init__()
            self.epochs = epochs

        def on_epoch_begin(self, epoch, logs=None):
            self.start, self.validation, self.steps = time.perf_counter(), None, 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps = batch + 1  # Keras passes the last step of the execution

        def on_test_begin(self, logs=None):
            self.validation = self.validation or time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append((self.steps, (self.validation or time.perf_counter()) - self.start))

    fit, predict_on_batch, matmul = keras.Model.fit, keras.Model.predict_on_batch, keras.ops.matmul

    def timed_fit(self, *args, callbacks=None, **kwargs):
        callbacks = list(callbacks or [])
        for i, callback in enumerate(callbacks):
            if type(callback).__name__ == "Throughput":
                record.fits.append([])
                callbacks.insert(i + 1, EpochClock(record.fits[-1]))  # right after it: the same stretch
                break
        return fit(self, *args, callbacks=callbacks, **kwargs)

    def timed_predict_on_batch(self, x, *args, **kwargs):
        start = time.perf_counter()
        out = predict_on_batch(self, x, *args, **kwargs)
        record.predicts.append((tuple(np.shape(x)), start, time.perf_counter()))
        return out

    def timed_matmul(a, b):
        start = time.perf_counter()
        out = matmul(a, b)
        record.matmuls.append((keras.backend.standardize_dtype(a.dtype), tuple(a.shape), start, time.perf_counter()))
        return out

    monkeypatch.setattr(keras.Model, "fit", timed_fit)
    monkeypatch.setattr(keras.Model, "predict_on_batch", timed_predict_on_batch)
    monkeypatch.setattr(keras.ops, "matmul", timed_matmul)
    return record


def assert_epochs_agree(rates: list, epochs: list, batch: int) -> None:
    """Each epoch's images/s is its steps x batch over the seconds the test timed."""
    assert len(rates) == len(epochs) >= 1, (rates, epochs)
    for rate, (steps, seconds) in zip(rates, epochs):
        assert agrees(steps * batch, rate, seconds), (rate, steps, batch, seconds)


def assert_fits_agree(doc: dict, clock: Clock) -> None:
    """The bare fits (with metrics, then the loss only: the last two timed fits) against the test's clock; each
    --quick figure is one timed fit of settings.steps steps (the median of one)."""
    settings, (row,) = doc["settings"], doc["training"]
    fit, fit_plain = clock.fits[-2:]
    assert settings["repeats"] == 1 and [steps for steps, _ in fit + fit_plain] == [settings["steps"]] * 2
    assert_epochs_agree(row["fit_epochs_images_per_sec"], fit, settings["batch_size"])
    assert_epochs_agree([row["fit_images_per_sec"]], fit, settings["batch_size"])
    assert_epochs_agree([row["fit_plain_images_per_sec"]], fit_plain, settings["batch_size"])


def assert_predict_agrees(doc: dict, clock: Clock) -> None:
    """predict_on_batch's images/s: the calls the test timed (after predict_rate's 2 warm-ups) x the batch over
    their seconds."""
    (predict,) = doc["predict"]
    shape = (doc["settings"]["predict_batch"], *predict["padded_size"], 3)
    timed = [(start, end) for s, start, end in clock.predicts if s == shape][2:]
    assert timed and agrees(len(timed) * shape[0], predict["images_per_sec"], timed[-1][1] - timed[0][0])


def assert_matmul_figures_agree(doc: dict, clock: Clock) -> None:
    """Each dtype's GFLOP/s is 2 n^3 per product of the products the test timed (after matmul_gflops' untimed
    warm-up run of 4) over the seconds they took."""
    n = doc["settings"]["matmul_n"]
    for dtype, rate in doc["matmul_gflops"].items():
        calls = [(start, end) for d, shape, start, end in clock.matmuls if d == dtype and shape == (n, n)]
        timed = calls[4:]
        assert timed, (dtype, len(calls))
        seconds = timed[-1][1] - timed[0][0]
        assert agrees(2 * n ** 3 * len(timed) / 1e9, rate, seconds), (dtype, rate, len(timed), seconds)


def assert_peak_shares_agree(doc: dict) -> None:
    """Every training figure's share of the matmul peak is GFLOPs per image x 3 x images/s / the peak of its
    compute dtype."""
    for row in doc["training"]:
        peak = doc["matmul_gflops"][bench.COMPUTE_DTYPE[row["precision"]]]
        for key in ("train", "fit", "fit_plain"):
            if f"{key}_images_per_sec" in row:
                assert row[f"{key}_peak_fraction"] == pytest.approx(
                    row["gflops_per_image"] * 3 * row[f"{key}_images_per_sec"] / peak, rel=1e-9), key


@pytest.mark.slow
def test_quick_bench_prints_tables_and_figures_the_tests_clock_agrees_with(cli, tmp_path, clock):
    out = tmp_path / "bench.json"
    # one model and one precision keep the test short on two cores (both models and both precisions run the
    # same code; the default precisions are test_gpu_defaults_are_float16_and_xla's, a bf16 training the
    # precision section's); the torch section has its own test (torch.compile takes tens of seconds here)
    result = cli("bench", "--quick", "--models", "lambda-unet", "--precisions", "float32", "--skip", "torch",
                 "--json", out)
    assert result.exit_code == 0, result.output
    for title in ("training images/s", "train/fit", "share of the matmul peak", "predict_on_batch images/s",
                  "tiled predict of a 1024x1024 image", "matmul peak", "input pipeline alone", "on tensorflow 2."):
        assert title in result.stdout, title
    doc = json.loads(out.read_text())
    found = dict(figures(doc))
    bad = {p: v for p, v in found.items() if not (math.isfinite(v) and v > 0)}
    assert not bad, bad
    assert doc["precisions"] == ["float32"] and doc["quick"] is True
    assert [(r["model"], r["precision"]) for r in doc["training"]] == [("lambda-unet", "float32")]
    for row in doc["training"]:
        for key in ("train_images_per_sec", "fit_images_per_sec", "fit_plain_images_per_sec", "train_over_fit",
                    "gflops_per_image", "train_peak_fraction", "fit_peak_fraction", "fit_plain_peak_fraction"):
            assert key in row, key
        assert row["train_over_fit"] == pytest.approx(row["train_images_per_sec"] / row["fit_images_per_sec"])
    assert set(doc["matmul_gflops"]) == {"float32", "bfloat16"}  # always both, then those of --precisions
    assert len(doc["predict"]) == 1 and doc["predict"][0]["padded_size"] == [64, 80]  # one per precision

    # each figure against the test's clock: the train path's fit (its epochs after the first), the bare fits,
    # predict_on_batch, the matmul peak
    (row,) = doc["training"]
    *train_path, _, _ = clock.fits
    train_epochs = [epoch for epochs in train_path for epoch in epochs][1:]
    assert_epochs_agree(row["train_epochs_images_per_sec"], train_epochs, doc["settings"]["batch_size"])
    assert_fits_agree(doc, clock)
    assert_predict_agrees(doc, clock)
    assert_matmul_figures_agree(doc, clock)
    assert_peak_shares_agree(doc)
    tiled = doc["tiled"]
    assert tiled["size"] == [1024, 1024] and tiled["peak_rss_mib"] >= tiled["peak_rss_before_predict_mib"]
    assert doc["data"]["classes"] == 12
    assert set(doc["pipeline_images_per_sec"]) == {"tfdata", "numpy"}
    assert doc["system"]["backend"] == "tensorflow" and "unavailable" not in doc


@pytest.mark.slow
def test_an_encoder_net_is_benchmarked_as_model_colon_encoder(cli, sample_data, monkeypatch, clock):
    """`--models unet:mobilenetv3small`: the bare fit and predict build the U-Net on that backbone (its GFLOPs,
    not the plain U-Net's), at the --size and --batch-size given. (The train path takes the same recipe overrides
    as the fit; the engines section exports the model to every installed engine, which test_engines checks; both
    are left out to keep the test short.)"""
    import segcli.models
    import segcli.training.run
    from segcli.models import build_model, gflops

    built = []

    def spy(name, num_classes, **options):
        built.append((name, options.get("encoder")))
        return build_model(name, num_classes, **options)

    monkeypatch.setattr(segcli.models, "build_model", spy)  # the sections import it when they run
    monkeypatch.setattr(segcli.training.run, "build_model", spy)  # the train path

    result = cli("bench", "--quick", "--data", sample_data, "--models", "unet:mobilenetv3small", "--precisions",
                 "float32", "--skip", "matmul,pipeline,train,torch,tiled,engines", "--size", "64x96",
                 "--batch-size", "2", "--json", "-")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["settings"]["train_size"] == [64, 96] and doc["settings"]["batch_size"] == 2
    [row] = doc["training"]
    assert row["model"] == "unet:mobilenetv3small"
    assert_fits_agree(doc, clock)
    encoder_net = gflops(build_model("unet", 12, encoder="mobilenetv3small"), 64, 96)
    assert row["gflops_per_image"] == pytest.approx(encoder_net, rel=1e-6)
    assert encoder_net != pytest.approx(gflops(build_model("unet", 12), 64, 96), rel=0.05)
    assert [r["model"] for r in doc["predict"]] == ["unet:mobilenetv3small"]
    assert_predict_agrees(doc, clock)
    # the size check, the GFLOPs, the fit and predict: each built the encoder net
    assert len(built) >= 4 and set(built) == {("unet", "mobilenetv3small")}, built


def test_json_dash_prints_only_json(cli, clock):
    result = cli("bench", "--quick", "--models", "lambda-fcn", "--precisions", "float32", "--skip",
                 "train,fit,pipeline,predict,tiled", "--json", "-")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc["matmul_gflops"]) == {"float32", "bfloat16"}
    assert_matmul_figures_agree(doc, clock)
    assert "training" not in doc and "tiled" not in doc


def test_gpu_defaults_are_float16_and_xla(monkeypatch):
    assert bench.default_precisions(gpu=True) == ("float32", "mixed_float16")
    assert bench.default_precisions(gpu=False) == ("float32", "mixed_bfloat16")
    assert bench.default_jit(gpu=True) is True and bench.default_jit(gpu=False) is False

    from segcli import system

    with monkeypatch.context() as patch:
        patch.setattr(system, "gpu_names", lambda: ["fake GPU"])  # what the backend sees
        assert bench.gpu_available()
        assert bench.default_precisions() == ("float32", "mixed_float16") and bench.default_jit() is True
    assert bench.default_jit(gpu=False, backend="jax") is True  # jax compiles: its eager mode runs op by op

    monkeypatch.setattr(bench.settings, "gpu_available", lambda: True)  # where run_bench looks it up
    doc = bench.run_bench(quick=True, skip=bench.SECTIONS)
    assert doc["precisions"] == ["float32", "mixed_float16"]
    assert doc["system"]["gpu"] is True and doc["system"]["jit"] is True
    doc = bench.run_bench(skip=bench.SECTIONS, jit="false")  # full settings: more steps with a GPU
    assert doc["system"]["jit"] is False and doc["settings"]["steps"] == 40
    assert bench.run_bench(skip=bench.SECTIONS, precisions=["float32"])["precisions"] == ["float32"]


def test_bench_data_links_cycles_and_holds_out_one_val_pair(sample_data, tmp_path):
    from segcli.data import check_dataset, open_dataset

    data = bench.prepare_data(sample_data, 35, tmp_path)  # sample_data has 30 train pairs: 5 used twice
    assert data.pairs == 35 and data.source == str(sample_data)
    dataset = open_dataset(data.root, val_fraction=bench.VAL_FRACTION)
    assert len(dataset.splits["train"]) == 34 and len(dataset.splits["val"]) == 1
    assert dataset.classes.names[3] == "Road" and check_dataset(dataset).ok


def test_synthetic_data_when_the_default_dataset_is_missing(monkeypatch, tmp_path):
    import numpy as np

    from segcli.data import check_dataset, open_dataset, read_label_png

    monkeypatch.setattr(bench.data, "DEFAULT_DATA", tmp_path / "absent")  # where prepare_data looks it up
    data = bench.prepare_data(None, 9, tmp_path / "work", synthetic_size=(40, 56))
    assert data.source == "synthetic"
    dataset = open_dataset(data.root, val_fraction=0.0)
    report = check_dataset(dataset)
    assert report.ok and report.counts == {"train": 9} and report.sizes == {"40x56": 9}
    assert dataset.classes.num_classes == 11 and dataset.classes.ignore_index == 11
    # the shares are the pixels the test counts in the masks (index PNGs: classes 0-10, void 11)
    counts = sum(np.bincount(read_label_png(pair.mask).ravel(), minlength=12) for pair in dataset.splits["train"])
    assert counts.sum() == 9 * 40 * 56 and len(counts) == 12
    assert report.pixel_share == pytest.approx(list(counts[:11] / counts.sum()), abs=1e-12)
    assert report.void_share == pytest.approx(counts[11] / counts.sum(), abs=1e-12)
    assert np.count_nonzero(counts[:11]) >= 6  # several classes in every crop's reach


@pytest.mark.parametrize("args, message", [
    (["--skip", "bogus"], "unknown section 'bogus'"),
    (["--models", "nope"], "unknown model 'nope'"),
    (["--models", "unet:nope"], "unknown encoder 'nope' in 'unet:nope'"),
    (["--models", "unet", "--size", "60x64"], "(--size) must divide by its output stride 16"),
    (["--precisions", "float64"], "--precisions: must be one of float32, mixed_float16, mixed_bfloat16, got 'float64'"),
    (["--jit", "maybe"], "--jit 'maybe'"),
    (["--data", "/no/such/folder"], "no such file or directory"),
])
def test_bad_options_fail_in_one_line(cli, args, message):
    result = cli("bench", "--quick", "--skip", ALL_SECTIONS, *args)  # a second --skip replaces the first
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_gflops_per_image_is_the_hand_count_of_a_tiny_conv_net():
    """The GFLOPs behind every share of the matmul peak: 2 x the multiply-accumulates of each conv and dense
    layer (other layers count nothing), counted by hand for a tiny net on an 8x12 image."""
    import keras

    from segcli.models import gflops

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)        # 8x12 outputs, 3x3x3 inputs each, 8 filters
    x = keras.layers.BatchNormalization()(x)                      # not counted
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(x)   # 4x6 outputs, 3x3x8, 4 filters
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)        # 4x6 outputs, 3x3 per channel, 4 channels
    x = keras.layers.Conv2DTranspose(5, 2, strides=2)(x)          # 4x6 inputs, each 2x2x4 into 5 filters
    x = keras.layers.Dense(2)(x)                                  # 8x12 positions, 5 -> 2
    macs = 8 * 12 * 27 * 8 + 4 * 6 * 72 * 4 + 4 * 6 * 9 * 4 + 4 * 6 * 2 * 2 * 4 * 5 + 8 * 12 * 5 * 2
    assert gflops(keras.Model(inputs, x), 8, 12) == pytest.approx(2 * macs / 1e9, rel=1e-12)


def test_importing_the_bench_package_imports_neither_tensorflow_nor_rich():
    """benchmarks/bench_keras_backend.py imports segcli.bench on machines without TensorFlow; the library
    never imports rich (segcli/cli/render/ prints the tables)."""
    code = ("import sys, segcli.bench; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'rich'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_keras_backend_benchmark_runs_the_nets_and_writes_finite_figures(tmp_path):
    """benchmarks/bench_keras_backend.py, as run on a GPU machine without TensorFlow, here on the TF backend."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_keras_backend.py"
    from segcli.models import build_model, gflops

    out_json, out_md = tmp_path / "b.json", tmp_path / "b.md"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(script), "--models", "lambda-fcn", "camvid-unet",
                           "--precisions", "float32", "--size", "32", "64", "--batch", "2",
                           "--steps", "2", "--epochs", "2", "--matmul-size", "64", "--json", str(out_json),
                           "--markdown", str(out_md)], capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out_json.read_text())
    # float32 alone: the policy is one set_dtype_policy per row, and bf16 is emulated (slow) on many CPUs
    assert [(r["model"], r["precision"]) for r in result["rows"]] == [("lambda-fcn", "float32"),
                                                                      ("camvid-unet", "float32")]
    for row in result["rows"]:
        assert "error" not in row, row
        assert len(row["train_epochs_images_per_sec"]) == 2
        for key in ("train_images_per_sec", "predict_images_per_sec", "peak_fraction", "gflops"):
            assert math.isfinite(row[key]), (key, row)
        # each epoch (2 steps of batch 2) took a positive time within the child's run, which the test timed
        assert all(0 < 2 * 2 / rate <= wall for rate in row["train_epochs_images_per_sec"]), (row, wall)
        assert row["train_images_per_sec"] == pytest.approx(sum(row["train_epochs_images_per_sec"]) / 2)  # median
        assert row["peak_fraction"] == pytest.approx(
            row["gflops"] * 3 * row["train_images_per_sec"] / result["matmul_gflops"]["float32"])
    assert result["rows"][0]["gflops"] == pytest.approx(gflops(build_model("lambda-fcn", 12), 32, 64), rel=1e-9)
    assert result["rows"][1]["params"] > result["rows"][0]["params"]  # the recipe's [model] section was read
    assert "| camvid-unet | float32 |" in out_md.read_text()


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is not installed")
def test_paired_torch_times_segcli_and_the_reference_in_turns(tmp_path):
    """benchmarks/paired_torch.py: one ratio per round, each segcli's images/s over PyTorch's (eager here: the
    compile would cost the suite a minute; the harness is the same)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "paired_torch.py"
    out = tmp_path / "p.json"
    done = subprocess.run([sys.executable, str(script), "--models", "lambda-fcn", "--rounds", "2", "--steps", "1",
                           "--mode", "eager", "--size", "32", "64", "--batch", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["backend"].startswith("tensorflow ") and result["size"] == [32, 64]
    (row,) = result["rows"]
    assert row["model"] == "lambda-fcn" and len(row["ratios"]) == len(row["segcli"]) == len(row["torch"]) == 2
    for ours, theirs, ratio in zip(row["segcli"], row["torch"], row["ratios"]):
        assert math.isfinite(ratio) and ours > 0 and theirs > 0 and ratio == pytest.approx(ours / theirs)
    assert "lambda-fcn: segcli" in done.stdout


@pytest.mark.slow
def test_precision_section_prints_both_loss_curves_and_their_ratio(cli, sample_data, tmp_path):
    """The check for any CPU kind (AMX lost accuracy in bf16): a CamVid recipe trained from the same weights
    on the same batches in float32 and in the device's reduced policy, both curves and their ratio in the JSON."""
    from segcli.system import cpu_name

    out = tmp_path / "bench.json"
    others = ",".join(s for s in bench.SECTIONS if s != "precision")
    result = cli("bench", "--quick", "--skip", others, "--precision-steps", 4, "--data", sample_data, "--json", out)
    assert result.exit_code == 0, result.output
    assert "training loss (mean of every" in result.stdout and "--precision auto picks" in result.stdout
    p = json.loads(out.read_text())["precision"]
    reduced = "mixed_float16" if json.loads(out.read_text())["system"]["gpu"] else "mixed_bfloat16"
    assert p["policies"] == ["float32", reduced] and p["recipe"] == "camvid-fcn" and p["cpu"] == cpu_name()
    base, other = p["curves"]["float32"], p["curves"][reduced]
    assert len(base) == len(other) == len(p["steps_at"]) == len(p["ratio"]) >= 2
    assert p["steps"] == p["steps_at"][-1] == 4 and p["data"] == str(sample_data)
    assert all(math.isfinite(v) and v > 0 for v in base + other)
    assert p["ratio"] == pytest.approx([b / a for a, b in zip(base, other)])
    assert p["ratio_last"] == pytest.approx(other[-1] / base[-1])
    assert base[0] != base[-1]  # it trained: the windows differ
    assert abs(p["ratio"][0] - 1) < 0.05  # same weights, same first batches: only rounding apart
    assert p["auto"] in ("float32", "mixed_bfloat16", "mixed_float16") and p["auto_reason"]


def test_quick_leaves_the_precision_section_out_unless_asked(cli):
    others = ",".join(s for s in bench.SECTIONS if s != "precision")
    result = cli("bench", "--quick", "--skip", others, "--json", "-")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert "precision" not in doc and "precision" in doc["skipped"]
    result = cli("bench", "--quick", "--skip", ALL_SECTIONS, "--precision-steps", 0)
    assert result.exit_code == 2 and "Traceback" not in result.output


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_quick_bench_runs_on_jax_and_torch_without_tensorflow(backend, tmp_path):
    """`segcli bench` on KERAS_BACKEND=jax / torch with TensorFlow uninstalled (for this process): the matmul,
    bare fit and predict sections give figures, the system record names the backend, nothing imports TensorFlow."""
    pytest.importorskip(backend)
    out = tmp_path / "bench.json"
    skip = ",".join(s for s in bench.SECTIONS if s not in ("matmul", "fit", "predict"))
    code = textwrap.dedent(f"""
        import sys
        from segcli.cli import app
        code = 0
        try:
            app(["bench", "--quick", "--models", "lambda-fcn", "--precisions", "float32", "--skip", "{skip}",
                 "--json", {str(out)!r}])
        except SystemExit as exc:
            code = exc.code
        print("TENSORFLOW LOADED:", sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow"))
        sys.exit(code)
    """)
    started = time.perf_counter()
    done = run_on_backend(backend, "-c", code, timeout=300)
    wall = time.perf_counter() - started
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "TENSORFLOW LOADED: []" in done.stdout
    doc = json.loads(out.read_text())
    assert doc["system"]["backend"] == backend and doc["system"]["backend_version"].startswith(backend)
    assert "unavailable" not in doc, doc.get("unavailable")  # no section gave up (e.g. for lack of TensorFlow)
    # the figures come from the child: each timed stretch fits in the child's run, which the test timed
    settings = doc["settings"]
    (row,) = doc["training"]
    images = settings["steps"] * settings["batch_size"]
    assert all(0 < images / rate <= wall for rate in (row["fit_images_per_sec"], row["fit_plain_images_per_sec"]))
    assert 0 < 3 * settings["predict_batch"] / doc["predict"][0]["images_per_sec"] <= wall  # 3 calls at least
    assert set(doc["matmul_gflops"]) == {"float32", "bfloat16"}
    assert all(map(math.isfinite, doc["matmul_gflops"].values()))
    assert_peak_shares_agree(doc)
    assert doc["system"]["jit"] is (backend == "jax")  # jax compiles (its eager mode runs op by op)


@pytest.mark.parametrize("name, params", [("lambda-fcn", 1_384_652), ("lambda-unet", 1_554_636)])
def test_torch_reference_nets_are_the_keras_nets(name, params):
    """The same parameters (12 and 5 classes), and with the Keras model's weights copied in, the same logits."""
    import keras
    import numpy as np
    import torch

    from segcli.models import build_model, count_params

    ref = torch_reference()
    for classes in (12, 5):
        keras.utils.set_random_seed(0)
        model, net = build_model(name, classes), ref.build(name, classes)
        assert ref.count_params(net) == count_params(model)
    assert ref.count_params(ref.build(name, 12)) == params  # the recipe's comment
    keras.utils.set_random_seed(0)
    model, net = build_model(name, 12), ref.build(name, 12)
    ref.copy_keras_weights(net, model)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 48, 3)).astype(np.float32)
    expected = np.asarray(model(x))
    with torch.no_grad():
        got = net(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    assert got.shape == expected.shape == (2, 32, 48, 12)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))
    # bf16 autocast only where the CPU computes bf16 natively (segcli.precision.cpu_has_bf16); float16 on a GPU
    assert ref.autocast_dtype("mixed_bfloat16", "cpu", native_bf16=True) == (torch.bfloat16, None)
    assert ref.autocast_dtype("mixed_bfloat16", "cpu", native_bf16=False)[0] is None
    assert "no native bf16" in ref.autocast_dtype("mixed_bfloat16", "cpu", native_bf16=False)[1]
    assert ref.autocast_dtype("float32", "cpu") == (None, None)


@pytest.mark.slow
def test_torch_section_prints_the_reference_beside_segcli_fit(cli, tmp_path):
    """One bench run: segcli's bare fit and the PyTorch reference, eager and compiled (its compile timed apart),
    side by side, with their ratio."""
    pytest.importorskip("torch")
    out = tmp_path / "bench.json"
    others = ",".join(s for s in bench.SECTIONS if s not in ("fit", "torch"))
    result = cli("bench", "--quick", "--models", "lambda-fcn", "--precisions", "float32", "--skip",
                 others, "--json", out)
    assert result.exit_code == 0, result.output
    assert "segcli beside a PyTorch reference, images/s (64x64, batch 4)" in result.stdout
    assert "fit/torch" in result.stdout and "torch.compile's first step: lambda-fcn float32" in result.stdout
    t = json.loads(out.read_text())["torch"]
    assert t["size"] == [64, 64] and t["batch"] == 4 and t["steps"] == 3  # --quick's settings
    rows = {(r["mode"], r["precision"]): r for r in t["rows"]}
    assert set(rows) == {("eager", "float32"), ("compiled", "float32")}
    for mode in ("eager", "compiled"):
        row = rows[mode, "float32"]
        assert row["model"] == "lambda-fcn" and row["params"] == 1_384_652
        assert row["images_per_sec"] > 0 and row["first_step_seconds"] > 0 and math.isfinite(row["loss_last"])
    compare = {r["precision"]: r for r in t["compare"]}["float32"]
    fit = compare["fit_plain_images_per_sec"]
    assert compare["fit_plain_over_torch_eager"] == pytest.approx(fit / compare["torch_eager_images_per_sec"])
    assert compare["fit_plain_over_torch"] == pytest.approx(
        fit / max(compare["torch_eager_images_per_sec"], compare["torch_compiled_images_per_sec"]))
    assert compare["torch_compile_seconds"] == rows["compiled", "float32"]["first_step_seconds"]


def test_torch_section_without_torch_says_how_to_get_it(cli, monkeypatch):
    monkeypatch.setattr(bench.measurements, "torch_installed", lambda: False)
    others = ",".join(s for s in bench.SECTIONS if s != "torch")
    result = cli("bench", "--quick", "--skip", others)
    assert result.exit_code == 0, result.output
    assert "torch: not run on tensorflow: PyTorch is not installed: pip install torch" in result.stdout
    result = cli("bench", "--quick", "--skip", others, "--json", "-")
    assert json.loads(result.stdout)["unavailable"] == {
        "torch": "PyTorch is not installed: " + bench.measurements.TORCH_HINT}


def test_a_section_that_cannot_run_on_the_backend_says_why(tmp_path):
    """On jax and torch a measurement that needs TensorFlow (in this process or in a child) is reported in
    result["unavailable"] and not tried again; on TensorFlow an ImportError is a real error."""
    def needs_tensorflow():
        raise ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")

    said = []
    run = bench.BenchRun(settings=bench.BenchSettings.quick_settings(), models=("lambda-fcn",),
                         precisions=("float32",), jit=False, gpu=False, data=None, workdir=tmp_path, skip=set(),
                         say=said.append, result={}, backend="jax")
    assert run.attempt("fit", needs_tensorflow) is None
    assert run.attempt("fit", lambda: 1) is None  # not tried again
    assert run.result["unavailable"] == {"fit": "needs tensorflow, which the jax backend does not load"}
    assert said == ["fit: not run: needs tensorflow, which the jax backend does not load"]
    with pytest.raises(ImportError) as raised:  # a child's ImportError comes back as one
        bench.run_in_child("segcli.no_such_module:f", {}, what="probe")
    assert raised.value.name == "segcli.no_such_module"
    assert run.attempt("tiled", bench.run_in_child, "segcli.no_such_module:f", {}, what="probe") is None
    assert run.result["unavailable"]["tiled"].startswith("needs segcli.no_such_module")
    run.backend = "tensorflow"
    with pytest.raises(ModuleNotFoundError):
        run.attempt("predict", needs_tensorflow)
