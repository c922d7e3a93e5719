"""`segcli bench`: the --quick run end to end (every figure finite and positive, tables printed), the
GPU defaults (precisions, XLA), the benchmark's datasets and bad options."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from segcli import bench

ALL_SECTIONS = ",".join(bench.SECTIONS)


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


@pytest.mark.slow
def test_quick_bench_prints_tables_and_finite_positive_figures(cli, tmp_path):
    out = tmp_path / "bench.json"
    # one model keeps the test near 30 s on two cores; both models run the same code
    result = cli("bench", "--quick", "--models", "lambda-unet", "--json", out)
    assert result.exit_code == 0, result.output
    for title in ("training images/s", "train/fit", "share of the matmul peak", "predict_on_batch images/s",
                  "tiled predict of a 1024x1024 image", "matmul peak", "input pipeline alone", "TensorFlow"):
        assert title in result.stdout, title
    doc = json.loads(out.read_text())
    found = dict(figures(doc))
    bad = {p: v for p, v in found.items() if not (math.isfinite(v) and v > 0)}
    assert not bad, bad
    precisions = ["float32", "mixed_bfloat16"]  # no GPU in the test environment (else mixed_float16)
    if doc["system"]["gpu"]:
        precisions = ["float32", "mixed_float16"]
    assert doc["precisions"] == precisions and doc["quick"] is True
    assert {tuple(r[k] for k in ("model", "precision")) for r in doc["training"]} == {
        ("lambda-unet", p) for p in precisions}
    for row in doc["training"]:
        for key in ("train_images_per_sec", "fit_images_per_sec", "fit_plain_images_per_sec", "train_over_fit",
                    "gflops_per_image", "train_peak_fraction", "fit_peak_fraction", "fit_plain_peak_fraction"):
            assert key in row, key
        assert row["train_over_fit"] == pytest.approx(row["train_images_per_sec"] / row["fit_images_per_sec"])
    assert set(doc["matmul_gflops"]) == {"float32", "bfloat16"} | (
        {"float16"} if "mixed_float16" in precisions else set())
    assert len(doc["predict"]) == 2 and doc["predict"][0]["padded_size"] == [64, 80]
    tiled = doc["tiled"]
    assert tiled["size"] == [1024, 1024] and tiled["peak_rss_mib"] >= tiled["peak_rss_before_predict_mib"]
    assert doc["data"]["classes"] == 12


def test_json_dash_prints_only_json(cli):
    result = cli("bench", "--quick", "--models", "lambda-fcn", "--precisions", "float32", "--skip",
                 "train,fit,pipeline,predict,tiled", "--json", "-")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc["matmul_gflops"]) == {"float32", "bfloat16"}
    assert all(v > 0 and math.isfinite(v) for v in doc["matmul_gflops"].values())
    assert "training" not in doc and "tiled" not in doc


def test_gpu_defaults_are_float16_and_xla(monkeypatch):
    assert bench.default_precisions(gpu=True) == ("float32", "mixed_float16")
    assert bench.default_precisions(gpu=False) == ("float32", "mixed_bfloat16")
    assert bench.default_jit(gpu=True) is True and bench.default_jit(gpu=False) is False

    import tensorflow as tf

    real = tf.config.list_physical_devices
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: ["fake GPU"] if kind == "GPU" else real(kind))
    assert bench.gpu_available()
    assert bench.default_precisions() == ("float32", "mixed_float16") and bench.default_jit() is True
    monkeypatch.setattr(tf.config, "list_physical_devices", real)

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
    from segcli.data import check_dataset, open_dataset

    monkeypatch.setattr(bench.data, "DEFAULT_DATA", tmp_path / "absent")  # where prepare_data looks it up
    data = bench.prepare_data(None, 9, tmp_path / "work", synthetic_size=(40, 56))
    assert data.source == "synthetic"
    dataset = open_dataset(data.root, val_fraction=0.0)
    report = check_dataset(dataset)
    assert report.ok and report.counts == {"train": 9} and report.sizes == {"40x56": 9}
    assert dataset.classes.num_classes == 11 and dataset.classes.ignore_index == 11
    assert sum(1 for share in report.pixel_share if share > 0) >= 6  # several classes in every crop's reach


@pytest.mark.parametrize("args, message", [
    (["--skip", "bogus"], "unknown section 'bogus'"),
    (["--models", "nope"], "unknown model 'nope'"),
    (["--precisions", "float64"], "unknown precision 'float64'"),
    (["--jit", "maybe"], "--jit 'maybe'"),
    (["--data", "/no/such/folder"], "no such file or directory"),
])
def test_bad_options_fail_in_one_line(cli, args, message):
    result = cli("bench", "--quick", "--skip", ALL_SECTIONS, *args)  # a second --skip replaces the first
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_importing_the_bench_package_imports_neither_tensorflow_nor_rich():
    """benchmarks/bench_keras_backend.py imports segcli.bench on machines without TensorFlow; the library
    never imports rich (segcli/cli/render.py prints the tables)."""
    code = ("import sys, segcli.bench; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'rich'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_keras_backend_benchmark_runs_the_nets_and_writes_finite_figures(tmp_path):
    """benchmarks/bench_keras_backend.py, as run on a GPU machine without TensorFlow, here on the TF backend."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_keras_backend.py"
    out_json, out_md = tmp_path / "b.json", tmp_path / "b.md"
    done = subprocess.run([sys.executable, str(script), "--models", "lambda-fcn", "camvid-unet",
                           "--precisions", "float32", "mixed_bfloat16", "--size", "32", "64", "--batch", "2",
                           "--steps", "2", "--epochs", "2", "--matmul-size", "64", "--json", str(out_json),
                           "--markdown", str(out_md)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out_json.read_text())
    assert [(r["model"], r["precision"]) for r in result["rows"]] == [
        ("lambda-fcn", "float32"), ("lambda-fcn", "mixed_bfloat16"),
        ("camvid-unet", "float32"), ("camvid-unet", "mixed_bfloat16")]
    for row in result["rows"]:
        assert "error" not in row, row
        assert len(row["train_epochs_images_per_sec"]) == 2
        for key in ("train_images_per_sec", "predict_images_per_sec", "peak_fraction", "gflops"):
            assert math.isfinite(row[key]) and row[key] > 0, (key, row)
    assert result["rows"][2]["params"] > result["rows"][0]["params"]  # the recipe's [model] section was read
    assert "| camvid-unet | mixed_bfloat16 |" in out_md.read_text()


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
