"""`segcli compare` on sample_data: trains two tiny models, writes the table, JSON and PNG; --from re-reads runs."""

import json
import math
import textwrap
from pathlib import Path

import pytest

from segcli.compare import COLUMNS


@pytest.mark.slow
def test_compare_trains_both_and_writes_table_json_png(cli, tmp_path, monkeypatch):
    import time

    import keras
    import numpy as np

    latencies = []  # each one-image predict_on_batch call's seconds, timed by the test (the latency column's)
    predict_on_batch = keras.Model.predict_on_batch

    def timed(self, x, *args, **kwargs):
        start = time.perf_counter()
        out = predict_on_batch(self, x, *args, **kwargs)
        if np.shape(x)[0] == 1:
            latencies.append(time.perf_counter() - start)
        return out

    monkeypatch.setattr(keras.Model, "predict_on_batch", timed)
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(textwrap.dedent("""
        [data]
        size = [64, 64]
        [train]
        epochs = 2
        batch_size = 8
        precision = "float32"
    """))
    out = tmp_path / "cmp"
    # sample_data is the default DATA_DIR; lambda nets are the tutorial's tiny ones
    result = cli("compare", "lambda-fcn", "lambda-unet", "--recipe", recipe, "--out", out)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "compare.json").read_text())
    assert [r["name"] for r in data["rows"]] == ["lambda-fcn", "lambda-unet"]
    for row in data["rows"]:
        for key, _, fmt in COLUMNS:
            if fmt == "{}":  # precision, backend, hardware: what each run trained with
                assert isinstance(row[key], str) and row[key], (key, row[key])
                continue
            assert isinstance(row[key], (int, float)) and math.isfinite(row[key]) and row[key] >= 0, (key, row[key])
        assert row["precision"] == "float32" and row["backend"].startswith("tensorflow ") and "CPU" in row["hardware"]
        assert row["epochs"] == 2
        # the figures are the run's: its metrics.json's images/s, the epochs after the first
        run = json.loads((Path(row["run_dir"]) / "metrics.json").read_text())
        assert row["train_images_per_sec"] == run["train_images_per_sec"] and math.isfinite(run["train_images_per_sec"])
        assert row["train_minutes"] == pytest.approx(run["train_seconds"] / 60)
    # the latency: the median of each model's 5 timed one-image calls (after 2 warm-ups) as the test timed them
    assert len(latencies) == 2 * 7, latencies
    for i, row in enumerate(data["rows"]):
        timed_ms = 1000 * float(np.median(latencies[7 * i + 2: 7 * i + 7]))
        assert timed_ms * 0.85 - 2 <= row["latency_ms"] <= timed_ms * 1.15 + 2, (row["latency_ms"], timed_ms)
    assert data["rows"][0]["params"] != data["rows"][1]["params"]
    md = (out / "compare.md").read_text()
    assert "| train images/s |" in md and "Hardware:" in md
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "lambda-fcn" in result.output and "val mIoU" in result.output
    assert result.stdout.count("epoch 2/2: loss ") == 2  # each training child's progress, relayed to the CLI

    runs = [out / "run-1-lambda-fcn", out / "run-2-lambda-unet"]
    for i, how in enumerate((["--from", runs[0], "--from", runs[1]], ["--from", *runs])):  # both spellings
        again = cli("compare", *how, "--out", tmp_path / f"again{i}")
        assert again.exit_code == 0, again.output
        rows = json.loads((tmp_path / f"again{i}" / "compare.json").read_text())["rows"]
        assert [r["val_miou"] for r in rows] == [r["val_miou"] for r in data["rows"]]  # read, not retrained


def test_compare_from_a_folder_that_is_not_a_run(cli, tmp_path):
    result = cli("compare", "--from", tmp_path, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "not a finished segcli run" in result.output


def test_an_error_in_the_training_child_ends_as_one_line(cli, sample_data, tmp_path):
    """compare trains each model in a child process through the library; the child's error comes back as
    one line naming the model and the child's problem, and nothing after it is trained."""
    missing = tmp_path / "no-such-classes.json"
    out = tmp_path / "cmp"
    result = cli("compare", "lambda-fcn", "lambda-unet", sample_data, "--classes", missing, "--epochs", "1",
                 "--out", out)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "training lambda-fcn failed" in lines[0] and str(missing) in lines[0], result.stderr
    assert not (out / "run-2-lambda-unet").exists()


def _children(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []


def _running(proc) -> bool:
    """Whether a psutil.Process runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_a_killed_compare_ends_its_child_and_the_rerun_leaves_no_temporary_nor_library_lines(sample_data, tmp_path):
    """kill -9 of `segcli compare` while its training child starts: the child ends within seconds (it watches
    a pipe only its parent can hold open; before, it ran on until its next write to the parent), its job
    folder stays in --out until the next compare there removes it, and nothing goes to the system temporary
    folder. That re-run, a tiny compare, prints none of TensorFlow's or absl's start-up lines on stderr."""
    import os
    import subprocess
    import sys
    import time

    from conftest import ROOT, start_child, wait_for_exit

    from segcli.files import TMP_TAG

    system_tmp = tmp_path / "tmp"  # the children's TMPDIR: what compare leaves in the system temporary folder
    system_tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user runs it
    env["TMPDIR"] = str(system_tmp)
    recipe = tmp_path / "tiny.toml"
    recipe.write_text('[data]\nsize = [64, 64]\n[train]\nepochs = 1\nbatch_size = 8\nprecision = "float32"\n')
    out = tmp_path / "cmp"
    args = [sys.executable, "-c", "from segcli.cli import main; main()", "compare", "lambda-fcn", sample_data,
            "--recipe", recipe, "--out", out]
    parent = start_child(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not _children(parent.pid):  # the training child has started
        assert parent.poll() is None, f"compare ended (exit {parent.returncode}) before its child started"
        assert time.monotonic() < deadline, "no training child after 300 s"
        time.sleep(0.05)
    child = _children(parent.pid)[0]
    parent.kill()
    parent.wait(timeout=60)
    gone_by = time.monotonic() + 5
    while _running(child) and time.monotonic() < gone_by:
        time.sleep(0.05)
    if _running(child):
        child.kill()
        pytest.fail("the training child still ran 5 s after its compare was killed")
    left = [p.name for p in out.iterdir() if TMP_TAG in p.name]
    assert left and all(p.startswith(f".run-1-lambda-fcn{TMP_TAG}") for p in left), left  # its job folder

    rerun = start_child(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = wait_for_exit(rerun, "the compare after the killed one", timeout=600)
    assert rerun.returncode == 0, output[-3000:]
    assert (out / "compare.json").is_file()
    assert not [p for p in out.iterdir() if TMP_TAG in p.name]
    assert not list(system_tmp.glob("segcli-compare-*"))
    for line in output.splitlines():  # stdout and stderr, as the terminal shows them
        assert not line.startswith(("I0000", "E0000", "W0000")) and "WARNING: All log messages" not in line, output
