"""A kill at any moment loses at most the unfinished epoch: training is stopped at each phase with SIGKILL
(tests/pause_train.py holds it at a known point, so nothing races the training's speed), then resumed;
every epoch appears once, every model file loads, and no temporary file is left. Plus what --resume and
--force refuse."""

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import start_child, wait_for_exit, wait_for_files
from test_train import rows, tiny_recipe

ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).with_name("pause_train.py")


def start_paused(point, args, marker, timeout: float = 600):
    """Start a training that stops at ``point``; return the process once it is there. It fails (the training
    killed) if the training ends first or is not there within `timeout` seconds."""
    proc = start_child([sys.executable, DRIVER, point, marker, *args], cwd=ROOT, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    wait_for_files([marker], [proc], f"the training to pause at {point}", timeout)
    return proc


def resume(out):
    return subprocess.run([sys.executable, "-m", "segcli", "train", "--resume", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def leftovers(folder):
    return [p for p in Path(folder).rglob("*") if ".segcli-tmp-" in p.name]


def layer_weights(path):
    """{dataset path: array} of the layers' variables in a .weights.h5 file or a .keras file's weights."""
    import io
    import zipfile

    import h5py

    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as zf:
            path = io.BytesIO(zf.read("model.weights.h5"))
    found = {}
    with h5py.File(path, "r") as f:
        f["layers"].visititems(lambda name, obj: found.__setitem__(name, obj[()])
                               if isinstance(obj, h5py.Dataset) else None)
    return found


def assert_complete(out, epochs):
    import keras

    assert [int(r["epoch"]) for r in rows(out / "history.csv")] == list(range(epochs))  # each epoch once
    assert json.loads((out / "metrics.json").read_text())["epochs"] == epochs
    assert "finished" in json.loads((out / "run.json").read_text())
    for name in ("model.keras", "best.keras"):
        keras.saving.load_model(out / name, compile=False)
    assert not leftovers(out) and not (out / "backup").exists() and not (out / ".segcli.lock").exists()


@pytest.mark.slow
def test_kill_9_at_each_phase_then_resume_loses_at_most_the_unfinished_epoch(sample_data, tmp_path):
    """One 2-epoch run, killed with SIGKILL four times, each `--resume` stopped at the next phase."""
    out = tmp_path / "run"
    first = ["unet", sample_data, "--recipe", tiny_recipe(tmp_path, epochs=2), "--out", out]
    phases = [  # where it is killed, the epochs the backup then holds
        ("batch:1", 1),     # mid-epoch: epoch 1 is lost, epoch 0 is kept
        ("backup:1", 1),    # epoch 1's backup half-written: epoch 0's is still whole
        ("after-fit", 2),   # both epochs done, no final file yet
        ("final-save", 2),  # model.keras half-written under its temporary name
    ]
    for i, (point, done) in enumerate(phases):
        proc = start_paused(point, first if i == 0 else ["--resume", out], tmp_path / f"paused-{i}")
        proc.send_signal(signal.SIGKILL)
        wait_for_exit(proc, f"the training killed at {point} to end", 60)
        state = json.loads((out / "backup" / "state.json").read_text())
        assert state["epoch"] == done and (out / "backup" / state["weights"]).is_file(), point
        assert [int(r["epoch"]) for r in rows(out / "history.csv")] == list(range(done)), point
        assert not (out / "metrics.json").exists(), point
        if point in ("backup:1", "final-save"):
            assert leftovers(out), f"{point} should have left a half-written temporary"

    backup_weights = layer_weights(out / "backup" / state["weights"])
    resumed = resume(out)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    trained = [line for line in resumed.stdout.splitlines() if line.startswith("epoch ") and "loss" in line]
    assert not trained, resumed.stdout  # both epochs were in the backup: nothing is trained again
    assert_complete(out, epochs=2)
    saved = layer_weights(out / "model.keras")  # the backup's trained weights, not a freshly built model's
    assert saved and saved.keys() <= backup_weights.keys()
    assert all(np.array_equal(saved[k], backup_weights[k]) for k in saved)


@pytest.mark.slow
def test_ctrl_c_then_resume_continues(cli, sample_data, tmp_path):
    """SIGINT during epoch 2 of 3: exit 130 with the resume command; --resume finishes epochs 2-3 only.
    Meanwhile the folder is locked: `--resume` or `--force` on it from elsewhere is refused."""
    out = tmp_path / "run"
    recipe = tiny_recipe(tmp_path, epochs=3)
    proc = start_paused("batch:1", ["unet", sample_data, "--recipe", recipe, "--out", out], tmp_path / "paused")
    # while it trains, a second writer of the folder is refused and the folder is left alone
    for args in (["--resume", out], ["unet", sample_data, "--recipe", recipe, "--out", out, "--force"]):
        result = cli("train", *args)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert len(result.stderr.strip().splitlines()) == 1 and "in use by process" in result.stderr
    assert (out / "recipe.toml").is_file() and (out / ".segcli.lock").is_file()
    proc.send_signal(signal.SIGINT)
    output = wait_for_exit(proc, "the training to exit after SIGINT")
    assert proc.returncode == 130, output
    assert f"segcli train --resume {out}" in output and "Traceback" not in output
    assert len(rows(out / "history.csv")) == 1 and (out / "backup").is_dir() and not (out / ".segcli.lock").exists()

    resumed = resume(out)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_complete(out, epochs=3)  # nothing lost, nothing repeated
    # and the resumed epochs are those of a run never stopped: same weights, optimizer state and batches
    straight = cli("train", "unet", sample_data, "--recipe", recipe, "--out", tmp_path / "straight")
    assert straight.exit_code == 0, straight.output
    losses = [[float(r[key]) for r in rows(folder / "history.csv") for key in ("loss", "val_loss")]
              for folder in (out, tmp_path / "straight")]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


@pytest.mark.slow
def test_resume_of_a_finished_run_is_refused_and_changes_nothing(cli, sample_data, tmp_path):
    out = tmp_path / "run"
    assert cli("train", "unet", sample_data, "--recipe", tiny_recipe(tmp_path, epochs=1), "--out", out).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    for args, words in ((["--resume", out], "finished (1/1 epochs)"),
                        (["--resume", out, "--epochs", "3", "--lr", "0.1"], "cannot take --epochs, --lr")):
        result = cli("train", *args)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert len(result.stderr.strip().splitlines()) == 1 and words in result.stderr, result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_resume_needs_a_backup_and_never_starts_over(cli, tmp_path):
    """A run folder whose backup is gone (an older segcli, or deleted) is refused, not retrained from scratch."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "recipe.toml").write_text('[model]\nname = "unet"\n')
    (out / "run.json").write_text(json.dumps({"data_dir": str(tmp_path), "dataset_classes": {"classes": []}}))
    (out / "history.csv").write_text("epoch,loss\n0,1.0\n")
    (out / "model.keras").write_text("the user's model")
    result = cli("train", "--resume", out)
    assert result.exit_code == 2 and "no usable training backup" in result.stderr, result.output
    assert (out / "model.keras").read_text() == "the user's model"


def test_force_replaces_only_folders_segcli_made(cli, sample_data, tmp_path):
    """--force never empties the data set or any folder segcli did not make; refused before any work."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    listing = sorted(p.relative_to(sample_data) for p in sample_data.rglob("*"))
    for out in (sample_data, mine, sample_data.parent):
        result = cli("train", "unet", sample_data, "--recipe", tiny_recipe(tmp_path, epochs=1), "--out", out, "--force")
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert len(result.stderr.strip().splitlines()) == 1 and str(out) in result.stderr
    assert sorted(p.relative_to(sample_data) for p in sample_data.rglob("*")) == listing
    assert (mine / "thesis.tex").read_text() == "years of work"


@pytest.mark.slow
def test_kill_in_the_first_backup_then_ctrl_c_in_the_final_save_both_resume(sample_data, tmp_path):
    """Killed while the first epoch's backup is written (backup/ holds only a temporary): --resume starts from
    epoch 1 and removes it. Ctrl-C while the final files are written: exit 130 with the resume command, and
    --resume writes them without training again."""
    out = tmp_path / "run"
    proc = start_paused("backup:0", ["unet", sample_data, "--recipe", tiny_recipe(tmp_path, epochs=1), "--out", out],
                        tmp_path / "paused-0")
    proc.send_signal(signal.SIGKILL)
    wait_for_exit(proc, "the killed training to end", 60)
    assert leftovers(out / "backup") and not (out / "backup" / "state.json").exists()

    proc = start_paused("after-fit", ["--resume", out], tmp_path / "paused-1")
    assert not leftovers(out)  # the resumed run removed the killed writer's temporary
    proc.send_signal(signal.SIGINT)
    output = wait_for_exit(proc, "the training to exit after SIGINT")
    assert proc.returncode == 130 and "segcli train --resume" in output and "Traceback" not in output, output

    resumed = resume(out)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert not [line for line in resumed.stdout.splitlines() if line.startswith("epoch ")], resumed.stdout
    assert_complete(out, epochs=1)


def test_out_of_memory_is_one_line_and_leaves_no_run_folder(cli, sample_data, tmp_path, monkeypatch):
    import keras
    import tensorflow as tf

    def oom(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor\nwith many lines")

    monkeypatch.setattr(keras.Model, "fit", oom)
    out = tmp_path / "run"
    result = cli("train", "unet", sample_data, "--recipe", tiny_recipe(tmp_path, epochs=1), "--out", out)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "out of memory" in result.stderr and "--size" in result.stderr
    assert not out.exists()


@pytest.mark.slow
def test_a_run_its_time_budget_stopped_stays_stopped_when_resumed(sample_data, tmp_path):
    """max_minutes ends the run after its first epoch; killed before the final files, --resume writes them and
    trains no further epoch (the budget's stop is in the backup)."""
    out = tmp_path / "run"
    recipe = tiny_recipe(tmp_path, epochs=3, extra="max_minutes = 0.0001")
    proc = start_paused("after-fit", ["unet", sample_data, "--recipe", recipe, "--out", out], tmp_path / "paused")
    proc.send_signal(signal.SIGKILL)
    wait_for_exit(proc, "the killed training to end", 60)
    assert json.loads((out / "backup" / "state.json").read_text())["budget_stopped"] is True

    resumed = resume(out)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert not [line for line in resumed.stdout.splitlines() if line.startswith("epoch ")], resumed.stdout
    assert_complete(out, epochs=1)
    assert json.loads((out / "metrics.json").read_text())["stopped_by_time_budget"] is True


# --- the run-folder lock: taking it is atomic -----------------------------------------------------------------

def race_for_lock(folder, contenders: int) -> list:
    """``contenders`` threads try folder_lock(folder) at one instant; a winner holds it until every contender
    has tried. Returns each one's outcome: "won" or the error's text."""
    import threading

    from segcli.errors import SegcliError
    from segcli.files import folder_lock

    # each wait has a deadline: a contender that never comes breaks the barrier, and the others end
    start, tried = (threading.Barrier(contenders, timeout=60) for _ in range(2))
    outcomes = [None] * contenders

    def contend(i):
        try:
            start.wait()
            try:
                with folder_lock(folder):
                    outcomes[i] = "won"
                    tried.wait()
            except SegcliError as exc:
                outcomes[i] = str(exc)
                tried.wait()
        except threading.BrokenBarrierError:
            outcomes[i] = outcomes[i] or "the other contenders did not all come within 60 s"

    threads = [threading.Thread(target=contend, args=(i,), daemon=True) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not any(thread.is_alive() for thread in threads), f"contenders still running after 180 s: {outcomes}"
    return outcomes


def test_a_lock_file_not_yet_filled_in_counts_as_held(tmp_path):
    """A lock file another process has created but not filled in yet (empty, or cut short) is a lock being
    taken: refused, not taken over as stale (two trainings would then write one folder)."""
    from segcli.errors import SegcliError
    from segcli.files import LOCK_NAME, folder_lock, lock_holder

    for text in ("", '{"pid": 12'):
        (tmp_path / LOCK_NAME).write_text(text)
        assert lock_holder(tmp_path) is not None
        with pytest.raises(SegcliError, match=f"in use by .*delete {LOCK_NAME}"):
            with folder_lock(tmp_path):
                pass
        assert (tmp_path / LOCK_NAME).read_text() == text  # left to whoever is writing it


def test_contenders_starting_at_once_on_one_folder_exactly_one_takes_its_lock(tmp_path):
    """Many contenders at one instant, on a free folder and on one whose lock is stale (its process is gone):
    each time exactly one gets the lock, the others are refused in one line, and nothing is left behind."""
    import os
    import socket

    from segcli.files import LOCK_NAME

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for round_ in range(6):
        folder = tmp_path / f"round{round_}"
        folder.mkdir()
        if round_ % 2:
            (folder / LOCK_NAME).write_text(json.dumps({"pid": int(gone.stdout), "host": socket.gethostname()}))
        outcomes = race_for_lock(folder, 12)
        assert outcomes.count("won") == 1, outcomes
        assert all(o == "won" or f"in use by process {os.getpid()}" in o for o in outcomes), outcomes
        assert not list(folder.iterdir())  # the winner's lock is gone, no temporary left


def test_processes_starting_at_once_on_one_folder_exactly_one_takes_its_lock(tmp_path):
    """The same across processes: all wait for one start file, try the lock and report; a winner holds it until
    the test has heard from all."""
    # each child's waits end after 300 s with a line naming the file it waited for (so a readline here ends too)
    child = textwrap.dedent("""
        import pathlib, sys, time
        from segcli.errors import SegcliError
        from segcli.files import folder_lock
        go, folder, release = map(pathlib.Path, sys.argv[1:])
        deadline = time.monotonic() + 300

        def wait_for(path, pause):
            while not path.exists():
                if time.monotonic() > deadline:
                    print(f"timed out waiting for {path.name}", flush=True)
                    sys.exit(3)
                time.sleep(pause)

        print("ready", flush=True)
        wait_for(go, 0.0005)
        try:
            with folder_lock(folder):
                print("won", flush=True)
                wait_for(release, 0.01)
        except SegcliError as exc:
            print(exc, flush=True)
    """)
    go, folder, release = tmp_path / "go", tmp_path / "run", tmp_path / "release"
    folder.mkdir()
    procs = [start_child([sys.executable, "-c", child, go, folder, release], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True) for _ in range(6)]
    try:
        assert [proc.stdout.readline().strip() for proc in procs] == ["ready"] * len(procs)
        go.touch()  # all at once
        outcomes = [proc.stdout.readline().strip() for proc in procs]
    finally:
        release.touch()
        for proc in procs:
            wait_for_exit(proc, "a lock contender to end after the release", 120)
    assert outcomes.count("won") == 1, outcomes
    assert all(o == "won" or "in use by process" in o for o in outcomes), outcomes
    assert not list(folder.iterdir())
