"""segcli on each Keras backend: the backend choice (--backend, KERAS_BACKEND, what is installed), and a whole
train -> predict -> evaluate on jax and torch in an environment without TensorFlow, whose model then gives the
same masks under TensorFlow (this process's backend)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import (ROOT, child_result, run_on_backend, start_child, tiny_recipe, wait_for_exit,
                      wait_for_files)
from segcli import backend, system
from segcli.errors import SegcliError


FLOAT32 = ["--precision", "float32"]  # predict and evaluate compared across backends (bf16 rounds differently on each)

# one process per backend: train, predict and evaluate through the CLI, as a user would run them in turn
E2E = """
import json, sys
import keras
from typer.testing import CliRunner
from segcli.cli import app
data, recipe, out = sys.argv[1:4]
runner = CliRunner()
FLOAT32 = ["--precision", "float32"]  # labels compared across backends: bf16 rounds differently on each
results = {}
for name, args in (
        ("train", ["train", "unet", data, "--recipe", recipe, "--out", f"{out}/run"]),
        ("predict", ["predict", f"{out}/run/model.keras", f"{data}/val", "--out", f"{out}/masks", *FLOAT32]),
        ("evaluate", ["evaluate", f"{out}/run/model.keras", data, "--out", f"{out}/eval", *FLOAT32])):
    r = runner.invoke(app, args)
    results[name] = {"code": r.exit_code, "output": r.output}
results["tensorflow_imported"] = "tensorflow" in sys.modules
results["backend"] = keras.backend.backend()
print("RESULT" + json.dumps(results))
"""


def test_select_follows_flag_then_variable_and_refuses_in_one_line(monkeypatch):
    import keras  # noqa: F401  (the suite runs on TensorFlow)
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert backend.select(None) == "tensorflow"
    with pytest.raises(SegcliError, match=r"unknown backend 'theano' \(--backend\); valid: tensorflow, jax, torch"):
        backend.select("theano")
    monkeypatch.setenv("KERAS_BACKEND", "mxnet")
    with pytest.raises(SegcliError, match=r"unknown backend 'mxnet' \(KERAS_BACKEND\)"):
        backend.select(None)
    monkeypatch.setattr(backend, "installed", lambda name: name != "jax")
    with pytest.raises(SegcliError, match=r"backend jax \(--backend\) is not installed: pip install 'segcli\[jax\]'"):
        backend.select("jax")
    monkeypatch.setattr(backend, "installed", lambda name: True)
    with pytest.raises(SegcliError, match="already loaded on tensorflow"):  # this process imported Keras on TF
        backend.select("torch")
    monkeypatch.delenv("KERAS_BACKEND")
    monkeypatch.setitem(sys.modules, "keras", None)  # as before Keras is imported
    monkeypatch.setenv("KERAS_HOME", "/nonexistent")  # no keras.json: the first installed one
    monkeypatch.setattr(backend, "installed", lambda name: name in ("jax", "torch"))
    assert backend.select(None) == "jax" and os.environ["KERAS_BACKEND"] == "jax"
    monkeypatch.delenv("KERAS_BACKEND")
    monkeypatch.setattr(backend, "installed", lambda name: False)
    with pytest.raises(SegcliError, match=r"no Keras backend is installed; install one: pip install 'segcli\[tensorflow\]'"):
        backend.select(None)


def test_keras_json_backend_is_used_only_where_installed(monkeypatch, tmp_path):
    """Keras writes keras.json naming tensorflow on any machine: on one without TensorFlow it must not block."""
    monkeypatch.setenv("KERAS_BACKEND", "")  # restored after the test (select sets the variable itself)
    monkeypatch.delenv("KERAS_BACKEND")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "tensorflow"}))
    monkeypatch.setattr(backend, "installed", lambda name: name == "torch")
    monkeypatch.setitem(sys.modules, "keras", None)  # as before Keras is imported
    assert backend.select(None) == "torch"
    monkeypatch.delenv("KERAS_BACKEND")  # select sets it, for the child processes
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "jax"}))
    monkeypatch.setattr(backend, "installed", lambda name: True)
    assert backend.select(None) == "jax"  # a user's own choice there is followed


def test_cli_backend_flag_errors_are_one_line(cli):
    result = cli("--backend", "nope", "models")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown backend 'nope' (--backend); valid: tensorflow, jax, torch"]


def test_compiled_programs_folder_only_on_jax_and_never_over_the_users_own(monkeypatch, tmp_path):
    for name in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
                 "JAX_COMPILATION_CACHE_MAX_SIZE", system.COMPILE_CACHE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delitem(sys.modules, "jax", raising=False)  # leave this process's JAX (if loaded) as it is
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert system.keep_compiled_programs() is None and "JAX_COMPILATION_CACHE_DIR" not in os.environ
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    folder = system.keep_compiled_programs()
    assert folder.parent == tmp_path / "xdg" / "segcli" / "jax" and folder.is_dir()  # one folder per machine kind
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(folder)  # for this process's JAX and its children
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))  # the user's own is kept
    assert system.keep_compiled_programs() == tmp_path / "mine"
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv(system.COMPILE_CACHE_ENV, "off")
    assert system.keep_compiled_programs() is None and "JAX_COMPILATION_CACHE_DIR" not in os.environ


# a model built on jax with segcli's compiled-programs folder; prints how many programs the folder holds
BUILD_ON_JAX = """
import os, sys
from pathlib import Path
os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)  # the test session's own cache: use segcli's folder instead
os.environ["XDG_CACHE_HOME"] = sys.argv[1]
from segcli.system import keep_compiled_programs
folder = keep_compiled_programs()
import keras
model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization()])
model.predict(keras.ops.ones((1, 16, 16, 3)), verbose=0)
print("RESULT" + str(len([p for p in folder.rglob("*") if p.is_file()])))
"""


def test_a_second_run_on_jax_loads_the_programs_the_first_compiled(tmp_path):
    """The second process compiles nothing: every program it needs is in the folder the first one filled."""
    pytest.importorskip("jax")
    counts = [child_result(run_on_backend("jax", "-c", BUILD_ON_JAX, tmp_path)) for _ in range(2)]
    assert counts[0] > 0 and counts[1] == counts[0], counts


def test_several_processes_are_refused_off_jax_naming_the_way_that_works(monkeypatch):
    from segcli.training.distribute import resolve_strategy

    with pytest.raises(SegcliError, match=r"runs on the JAX backend \(segcli --backend jax"):
        resolve_strategy("multi")
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    with pytest.raises(SegcliError, match="KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIBUTION_PROCESS_ID set too"):
        resolve_strategy("auto")


@pytest.mark.slow
@pytest.mark.parametrize("backend_name, hide", [("jax", True), ("torch", False)])
def test_train_predict_evaluate_without_tensorflow(backend_name, hide, sample_data, tmp_path, cli):
    """Done when of issue 14: with TensorFlow absent (jax: hidden from imports) or installed but never imported
    (torch), KERAS_BACKEND=jax|torch trains a complete run folder, and predict and evaluate work on it; the model
    then evaluates under TensorFlow with the same labels."""
    pytest.importorskip(backend_name)
    result = child_result(run_on_backend(backend_name, "-c", E2E, sample_data, tiny_recipe(tmp_path, epochs=2),
                                         tmp_path, hide_tensorflow=hide))
    for step in ("train", "predict", "evaluate"):
        assert result[step]["code"] == 0, (step, result[step]["output"][-2000:])
    assert result["backend"] == backend_name and not result["tensorflow_imported"]
    run = tmp_path / "run"
    for name in ("model.keras", "best.keras", "metrics.json", "history.csv", "run.json", "recipe.toml"):
        assert (run / name).is_file(), name
    assert not (run / "backup").exists() and not (run / "logs").exists()  # finished; no TensorBoard without TF
    info = json.loads((run / "run.json").read_text())
    assert info["backend"].startswith(backend_name + " ") and info.get("finished")
    assert json.loads((run / "metrics.json").read_text())["backend"] == info["backend"]
    assert len([ln for ln in (run / "history.csv").read_text().splitlines() if ln.strip()]) == 3  # header + 2
    assert f"{backend_name} " in result["train"]["output"]  # the backend printed with the precision and devices

    masks = sorted((tmp_path / "masks").glob("*.png"))
    assert len(masks) == len(list((sample_data / "val").glob("*.png")))
    # the same model file under TensorFlow (this process) predicts the same labels
    tf_pred = cli("predict", run / "model.keras", sample_data / "val", "--out", tmp_path / "tf_masks", *FLOAT32)
    assert tf_pred.exit_code == 0, tf_pred.output
    from segcli.data import read_label_png

    differ = total = 0
    for mask in masks:
        theirs, ours = read_label_png(mask), read_label_png(tmp_path / "tf_masks" / mask.name)
        differ += int((theirs != ours).sum())
        total += theirs.size
    assert differ <= total * 1e-3, f"{differ} of {total} pixels differ between {backend_name} and tensorflow"
    tf_eval = cli("evaluate", run / "model.keras", sample_data, "--out", tmp_path / "tf_eval", *FLOAT32)
    assert tf_eval.exit_code == 0
    scores = [json.loads(p.read_text()) for p in (tmp_path / "eval" / "evaluation.json", tmp_path / "tf_eval" / "evaluation.json")]
    assert abs(scores[0]["miou"] - scores[1]["miou"]) < 2e-3, scores


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _history_losses(run_dir: Path) -> list[float]:
    import csv

    with open(run_dir / "history.csv") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # five trainings in turn, each a fresh JAX process (its waits: up to 900 s each)
def test_two_processes_train_one_model_like_one_process(sample_data, tmp_path):
    """Issue 14: `segcli train` started twice on localhost with Keras' variables set trains one model (JAX
    DataParallel, one CPU device per process, gloo), into process 0's run folder. Ctrl-C (SIGINT to both, each
    held after the first step of epoch 2 by tests/pause_train.py, so nothing races the training) ends both with
    exit 130 and the resume command; `--resume` on both finishes the run. Its per-epoch losses match a
    one-process run with the same global batch and seed, never stopped (so this also checks that the resume
    picked up where the two had stopped)."""
    import signal

    pytest.importorskip("jax")
    recipe = tiny_recipe(tmp_path, epochs=2)
    scratch = tmp_path / "tmp"  # the temp folder of the children: process 1's scratch copies go there
    scratch.mkdir()
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT), "TMPDIR": str(scratch)}

    two, one = tmp_path / "two", tmp_path / "one"
    address = f"127.0.0.1:{_free_port()}"

    def start(i: int, args: list, pause_at: str | None = None) -> subprocess.Popen:
        """Process i of 2 training into `two` (held at `pause_at` by tests/pause_train.py, if given)."""
        marker = tmp_path / f"paused-{i}"
        command = ([sys.executable, str(ROOT / "tests" / "pause_train.py"), pause_at, str(marker)] if pause_at
                   else [sys.executable, "-c", "from segcli.cli import main; main()", "train"])
        multi = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": address, "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
                 "KERAS_DISTRIBUTION_PROCESS_ID": str(i)}
        # start_child: killed when the test ends if still running (a failed wait or assertion leaves them)
        return start_child([*command, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env={**env, **multi})

    # both held after the first step of epoch 2, then Ctrl-C'd, then resumed
    procs = [start(i, ["unet", sample_data, "--recipe", recipe, "--out", two], "batch:1") for i in range(2)]
    wait_for_files([tmp_path / f"paused-{i}" for i in range(2)], procs,
                   "both training processes to pause after the first step of epoch 2", 900)
    for p in procs:
        p.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal running them does
    outputs = [wait_for_exit(p, f"process {i} of 2 to exit after SIGINT") for i, p in enumerate(procs)]
    assert [p.returncode for p in procs] == [130] * 2, "\n".join(o[-2000:] for o in outputs)
    for output in outputs:
        assert f"segcli train --resume {two}" in output and "Traceback" not in output, output[-2000:]
    assert len(_history_losses(two)) == 1 and (two / "backup").is_dir()  # epoch 1 kept, epoch 2 to redo
    procs = [start(i, ["--resume", two]) for i in range(2)]
    outputs = [wait_for_exit(p, f"process {i} of 2 to finish the resumed run", 900) for i, p in enumerate(procs)]
    assert [p.returncode for p in procs] == [0] * 2, "\n".join(o[-2000:] for o in outputs)

    straight = subprocess.run([sys.executable, "-m", "segcli", "train", "unet", str(sample_data), "--recipe",
                               str(recipe), "--out", str(one)], capture_output=True, text=True, env=env, timeout=900)
    assert straight.returncode == 0, (straight.stdout + straight.stderr)[-2000:]
    assert "in 2 processes (this is process 0)" in outputs[0]
    assert outputs[1].strip().splitlines()[-1].startswith("process 1 of 2 finished; process 0 wrote")
    assert "epoch 2/2" in outputs[0] and "epoch 2/2" not in outputs[1]  # only process 0 reports
    two_losses, one_losses = _history_losses(two), _history_losses(one)
    assert len(two_losses) == 2 and np.allclose(two_losses, one_losses, rtol=1e-3), (two_losses, one_losses)
    info = json.loads((two / "run.json").read_text())
    assert info.get("finished") and "2 processes" in info["strategy"]
    assert not list(scratch.glob("segcli-process1-*"))  # process 1's scratch copies are gone


ONEDNN_PROBE = """
import json, os, sys
import segcli  # before TensorFlow, as the CLI and a Python user import it
from tensorflow.python.util import _pywrap_util_port
from segcli.backend import version
print("RESULT" + json.dumps({"env": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "on": _pywrap_util_port.IsMklEnabled(),
                             "version": version().split(" ", 2)[2]}))
"""


@pytest.mark.skipif(not (sys.platform.startswith("linux") and os.uname().machine == "x86_64"),
                    reason="segcli turns TensorFlow's oneDNN kernels on only on x86-64 Linux")
def test_tensorflow_runs_its_onednn_kernels_unless_the_user_said_otherwise(monkeypatch):
    """Importing segcli before TensorFlow turns TensorFlow's oneDNN kernels on (it leaves them off itself on CPUs
    without AVX512_VNNI/BF16/AMX, as this project's AVX2-only CI machines); a user's TF_ENABLE_ONEDNN_OPTS=0 stands;
    once TensorFlow is loaded (this process) segcli changes nothing."""
    def probe(**env):
        base = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
        proc = subprocess.run([sys.executable, "-c", ONEDNN_PROBE], capture_output=True, text=True,
                              env={**base, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "tensorflow", **env},
                              timeout=300)
        return child_result(proc)

    assert probe() == {"env": "1", "on": True, "version": "(oneDNN on)"}  # run.json and train's line say so
    assert probe(TF_ENABLE_ONEDNN_OPTS="0") == {"env": "0", "on": False, "version": "(oneDNN off)"}
    import tensorflow  # noqa: F401  (loaded already in the suite; too late to choose)

    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    assert backend.prefer_onednn() is False and "TF_ENABLE_ONEDNN_OPTS" not in os.environ
