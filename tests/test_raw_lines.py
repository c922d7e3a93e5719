"""No library's raw lines reach the terminal in any command: each command runs once on tiny inputs in a real
`python -m segcli` process (CliRunner does not see what C code writes to fd 2), and its stderr holds none of
TensorFlow's, absl's, libpng's or OpenCV's own lines, nor a library's Python warnings. Every command runs on the
default backend (TensorFlow where installed); train, predict and evaluate on the other installed backends too.
The commands of a backend share one tiny trained model."""

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import ROOT, tiny_recipe_text
from segcli.backend import BACKENDS, TF_LOG_ENV, installed
from segcli.data import ClassMap, write_mask_png

THREE = ClassMap(("a", "b", "c"), ((255, 0, 0), (0, 255, 0), (0, 0, 255)), ignore_index=255)

# a library's own lines: glog/absl (I0000 00:00:... file.cc:12] ...), absl's start-up notice, TensorFlow's oneDNN
# and CUDA notes, libpng's warnings and errors, OpenCV's log lines, Python warnings (FILE:LINE: UserWarning: ...)
RAW = re.compile(r"^[IEWF]\d{4} |WARNING: All log messages|oneDNN custom operations|libpng|\[ WARN:|\[ERROR:|"
                 r"cuda|cuInit|absl::|tensorflow/core|TF-TRT|\w+Warning: |warnings\.warn", re.IGNORECASE | re.MULTILINE)
ON_EVERY_BACKEND = ("train", "predict", "evaluate")  # the commands that run a model: a backend's lines show there


def tiny_dataset(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 2)):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for i in range(n):
            cv2.imwrite(str(root / split / f"{split}{i}.png"), rng.integers(0, 255, (64, 64, 3), np.uint8))
            labels = np.zeros((64, 64), np.uint8)
            labels[:, 20:40], labels[:, 40:] = 1, 2
            labels[:4] = 255
            write_mask_png(root / f"{split}annot" / f"{split}{i}.png", labels, THREE.palette())
    THREE.save(root / "classes.json")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("raw_lines")
    tiny_dataset(work / "data")
    (work / "tiny.toml").write_text(tiny_recipe_text(epochs=1))
    return work


def segcli(work: Path, *args) -> subprocess.CompletedProcess:
    """`python -m segcli ARGS` as a user runs it: TensorFlow's log level left unset (the tests set one)."""
    env = {key: value for key, value in os.environ.items() if key != TF_LOG_ENV}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "segcli", *map(str, args)], capture_output=True, text=True,
                          cwd=work, env=env, timeout=600)


def failure(proc: subprocess.CompletedProcess, what: str) -> str | None:
    """What went wrong with one command: it failed, or printed a library's raw lines on stderr; None if neither."""
    if proc.returncode != 0:
        return f"{what}: exit {proc.returncode}\n{proc.stdout[-1000:]}\n{proc.stderr[-2000:]}"
    raw = [line for line in proc.stderr.splitlines() if RAW.search(line)]
    return f"{what} printed a library's raw lines on stderr:\n" + "\n".join(raw[:20]) if raw else None


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_no_command_prints_a_librarys_raw_lines(workdir, backend):
    if not installed(backend):
        pytest.skip(f"{backend} is not installed")
    default = next(b for b in BACKENDS if installed(b))
    work, data = workdir / backend, workdir / "data"
    work.mkdir()
    image, mask = data / "val" / "val0.png", data / "valannot" / "val0.png"
    model = "run/model.keras"
    commands = [
        ("data check", ["data", "check", data]),
        ("models", ["models"]),
        ("models show", ["models", "show", "unet"]),
        ("train", ["train", "unet", data, "--recipe", workdir / "tiny.toml", "--out", "run"]),
        ("models show MODEL.keras", ["models", "show", model]),
        ("predict", ["predict", model, image, "--out", "preds", "--overlay"]),
        ("overlay", ["overlay", image, mask, "--out", "overlay.png"]),
        ("evaluate", ["evaluate", model, data, "--out", "report"]),
    ]
    onnx = ("onnx", "onnxruntime", "tf2onnx") if backend == "tensorflow" else ("onnx", "onnxruntime")
    fmt = "onnx" if backend != "jax" and all(installed(name) for name in onnx) else "savedmodel"
    commands.append(("export", ["export", model, "--format", fmt, "--out", f"m.{fmt}"]))
    commands.append(("bench", ["bench", "--quick", "--models", "lambda-unet", "--precisions", "float32", "--skip",
                               "matmul,pipeline,train,fit,torch,tiled,precision"]))
    if backend != default:
        commands = [(what, args) for what, args in commands if what in ON_EVERY_BACKEND]
    failures = [found for what, args in commands
                if (found := failure(segcli(work, "--backend", backend, *args), f"{what} on {backend}"))]
    assert not failures, "\n\n".join(failures)
    assert (work / "run" / "model.keras").is_file() and (work / "preds" / "val0.png").is_file()
    assert (work / "report" / "confusion.csv").is_file()
