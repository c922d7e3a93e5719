import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The Ctrl-C tests send SIGINT to segcli children. A suite started as a background job of a script (`cmd &`,
# nohup) inherits SIGINT ignored, and so would every child: Python and segcli leave an ignored SIGINT ignored
# (as they should), so those children would never stop and the tests would wait out their timeouts. Give the
# test processes Python's handler back: a child starts with SIGINT at its default again (exec resets handlers).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# The tests start many JAX processes that compile the same small programs (a Keras model's eager initializers
# alone are dozens of XLA compilations): JAX's persistent compilation cache, in a folder of this test session's
# own (entries are only valid on this machine), lets every process after the first load them instead (a tiny
# 2-epoch `segcli train` on jax: 41 s -> 12 s on a 2-core AMD EPYC). Children inherit the variables.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _jax_cache = tempfile.mkdtemp(prefix="segcli-tests-jax-cache-")
    atexit.register(shutil.rmtree, _jax_cache, ignore_errors=True)
    # a size limit makes JAX lock the folder (filelock) around each read and write: the xdist workers' children
    # share it
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_jax_cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1", JAX_COMPILATION_CACHE_MAX_SIZE=str(8 << 30))

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = ROOT / "sample_data"
CAMVID = ROOT.parent / "shared" / "data" / "camvid"
NO_TENSORFLOW = ROOT / "tests" / "no_tensorflow.py"  # runs Python as if TensorFlow were not installed


def script_module(path: str):
    """The script at ROOT/path (benchmarks/, scripts/: folders that are not packages) as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_on_backend(backend: str, *args, hide_tensorflow: bool = True, cwd=ROOT, timeout: float = 600):
    """`python [tests/no_tensorflow.py] ARGS...` in a child on KERAS_BACKEND=backend (CPU devices, segcli
    importable), TensorFlow hidden from imports unless hide_tensorflow=False; the CompletedProcess (text)."""
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    launcher = [str(NO_TENSORFLOW)] if hide_tensorflow else []
    return subprocess.run([sys.executable, *launcher, *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def child_result(proc, tag: str = "RESULT") -> dict:
    """The JSON a child printed on its last line starting with `tag`, after checking it exited 0."""
    lines = [line for line in proc.stdout.splitlines() if line.startswith(tag)]
    assert proc.returncode == 0 and lines, (proc.stdout + proc.stderr)[-3000:]
    return json.loads(lines[-1][len(tag):])


_CHILDREN: list[subprocess.Popen] = []  # start_child's, killed after each test if still running


def start_child(args, **kwargs) -> subprocess.Popen:
    """subprocess.Popen(args, **kwargs), killed when the test ends if it is still running: a failed assertion,
    a passed deadline or pytest-timeout's limit leaves no child behind (a paused training would wait on)."""
    proc = subprocess.Popen([str(a) for a in args], **kwargs)
    _CHILDREN.append(proc)
    return proc


@pytest.fixture(autouse=True)
def kill_children_left_running():
    yield
    while _CHILDREN:
        proc = _CHILDREN.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)


def _output(proc) -> str:
    """The tail of a finished (or killed) child's output, if it was piped."""
    out = proc.communicate()[0] if proc.stdout is not None else None
    return (out or "")[-3000:] if isinstance(out, str) else ""


def wait_for_files(paths, procs, what: str, timeout: float = 600.0) -> None:
    """Return once every one of `paths` exists. If one of the child processes `procs` ends first, or `timeout`
    seconds pass, kill them all and fail, naming `what` was awaited, with their output."""
    deadline = time.monotonic() + timeout
    while not all(Path(p).is_file() for p in paths):
        ended = [p for p in procs if p.poll() is not None]
        if ended or time.monotonic() > deadline:
            for p in procs:
                p.kill()
            why = (f"a process ended (exit {ended[0].returncode}) first" if ended
                   else f"not there after {timeout:g} s (the processes were killed)")
            pytest.fail(f"waiting for {what}: {why}:\n" + "\n".join(_output(p) for p in procs))
        time.sleep(0.1)


def wait_for_exit(proc, what: str, timeout: float = 600.0) -> str:
    """The output of child `proc` (stdout piped, text) once it exits; after `timeout` seconds it is killed and the
    test fails, naming `what` was awaited."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"waiting for {what}: still running after {timeout:g} s (killed):\n{_output(proc)}")


def tiny_recipe_text(epochs: int = 2, extra: str = "", precision: str | None = "float32",
                     lr: float | None = 0.003) -> str:
    """The recipe of the tests that train: a depth-2 U-Net with 4 base filters on 64x64 crops, batch 8.
    precision or lr None leaves the recipe's default; ``extra``: more lines of its [train] table."""
    train = [f"epochs = {epochs}", "batch_size = 8"]
    train += [f"lr = {lr}"] if lr is not None else []
    train += [f'precision = "{precision}"'] if precision is not None else []
    return ('[model]\nname = "unet"\n[model.options]\ndepth = 2\nbase_filters = 4\n[data]\nsize = [64, 64]\n'
            "[train]\n" + "\n".join([*train, extra]) + "\n")


def tiny_recipe(tmp_path: Path, epochs: int = 2, extra: str = "", precision: str | None = "float32",
                lr: float | None = 0.003) -> Path:
    """tiny_recipe_text(...) written to tmp_path/tiny.toml."""
    path = tmp_path / "tiny.toml"
    path.write_text(tiny_recipe_text(epochs, extra, precision, lr))
    return path


@pytest.fixture
def sample_data() -> Path:
    return SAMPLE_DATA


@pytest.fixture
def camvid_dir() -> Path:
    if not (CAMVID / "train").is_dir():
        pytest.skip(f"CamVid not found at {CAMVID} (needs ../shared/data/camvid beside the checkout)")
    return CAMVID


@pytest.fixture
def cli():
    """Run the real Typer app in-process; returns typer.testing.Result (exit_code, stdout, stderr, output)."""
    from typer.testing import CliRunner

    from segcli.cli import app

    runner = CliRunner()

    def run(*args):
        return runner.invoke(app, [str(a) for a in args])

    return run


def pytest_collection_modifyitems(config, items):
    """The slow tests first (in their files' order): with the README's `-n 2 --dist worksteal`, the two workers
    start on the long ones and finish together on the short ones, rather than one worker ending on a long test."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
