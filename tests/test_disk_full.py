"""A full disk is an ordinary error in every writer: one line naming the path and the space free (and needed),
exit 2, no half-written or temporary file and no empty folder left. The disk fills through a writer that raises
ENOSPC from its Nth write to a segcli temporary (injected at the file layer), through a disk that reports less
free space than a write needs, and (as root) through a real 3 MB tmpfs."""

import builtins
import errno
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, tiny_recipe

keras = pytest.importorskip("keras")

from segcli.data import default_classes, write_image  # noqa: E402
from segcli.errors import SegcliError  # noqa: E402
from segcli.files import TMP_TAG, NoSpaceError, atomic_path, no_space, no_space_errors, write_text  # noqa: E402
from segcli.inference.writers import NpyRowWriter  # noqa: E402
from segcli.modelfile import save_model  # noqa: E402
from segcli.models import build_model  # noqa: E402

K = 3
_Usage = namedtuple("_Usage", "total used free")


class _FailingFile:
    """A file whose writes raise ENOSPC from the shared count's ``n``-th on (as a full disk's write does)."""

    def __init__(self, f, count: list, n: int):
        self._f, self._count, self._n = f, count, n

    def write(self, data):
        self._count[0] += 1
        if self._count[0] >= self._n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __iter__(self):
        return iter(self._f)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def fill_disk_after(monkeypatch, n: int = 1, names: tuple[str, ...] = ()) -> list:
    """From the ``n``-th write on, writes to segcli's temporaries (those of outputs named in ``names``, or all)
    raise ENOSPC; returns the count of writes made."""
    count, real_open = [0], io.open

    def fake_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        name = os.fspath(file) if isinstance(file, (str, os.PathLike)) else ""
        if (any(c in mode for c in "wax+") and TMP_TAG in str(name)
                and (not names or any(f".{n}{TMP_TAG}" in str(name) for n in names))):
            return _FailingFile(f, count, n)
        return f

    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(builtins, "open", fake_open)
    return count


def report_free(monkeypatch, free: int) -> None:
    """Every disk reports ``free`` bytes free."""
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _Usage(10 << 30, (10 << 30) - free, free))


def temporaries(folder: Path) -> list[Path]:
    return [p for p in Path(folder).rglob("*") if TMP_TAG in p.name]


def assert_one_line(result, name: str) -> str:
    """Exit 2 and one line on stderr naming ``name`` and the free space; no traceback, no library text."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert name in lines[0] and "no space left on the device" in lines[0], lines[0]
    assert re.search(r"\(\d+(\.\d)? [KM]B free", lines[0]), lines[0]
    assert "Traceback" not in result.output and "libpng" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    keras.utils.set_random_seed(0)
    save_model(build_model("unet", K, depth=2, base_filters=4, convs_per_block=1), path,
               default_classes(K, ["sky", "road", "car"]), {"model_name": "unet"})
    return path


def make_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3)).astype(np.uint8)


# --- the helpers in segcli.files -------------------------------------------------------------------

def test_no_space_message_names_the_path_and_the_space(tmp_path, monkeypatch):
    report_free(monkeypatch, 3 * 1024 * 1024)
    err = no_space(tmp_path / "a.npy", needed=5 * 1024 * 1024)
    assert isinstance(err, SegcliError) and err.exit_code == 2
    assert str(err) == f"{tmp_path / 'a.npy'}: no space left on the device (3.0 MB free, about 5.0 MB needed)"
    report_free(monkeypatch, 0)
    assert str(no_space(tmp_path / "b.png", 3000)).endswith("(0 KB free, about 3 KB needed)")


def test_no_space_errors_turns_only_a_full_disk_into_one_line(tmp_path):
    with pytest.raises(NoSpaceError, match="x.bin: no space left"):
        with no_space_errors(tmp_path / "x.bin"):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(NoSpaceError):
        with no_space_errors(tmp_path / "x.bin"):
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
    with pytest.raises(PermissionError):  # any other error passes unchanged
        with no_space_errors(tmp_path / "x.bin"):
            raise PermissionError(errno.EACCES, "Permission denied")
    with pytest.raises(ValueError):
        with no_space_errors(tmp_path / "x.bin"):
            raise ValueError("not a disk matter")


def test_atomic_write_on_a_full_disk_leaves_nothing(tmp_path, monkeypatch):
    (tmp_path / "keep.txt").write_text("old")
    fill_disk_after(monkeypatch, 1)
    with pytest.raises(NoSpaceError, match="keep.txt: no space left on the device"):
        write_text(tmp_path / "keep.txt", "new")
    assert (tmp_path / "keep.txt").read_text() == "old" and not temporaries(tmp_path)


def test_a_known_size_is_refused_before_the_write(tmp_path, monkeypatch):
    report_free(monkeypatch, 100_000)
    ran = []
    with pytest.raises(NoSpaceError, match=r"big.h5: .*\(98 KB free, about 1.0 MB needed\)"):
        with atomic_path(tmp_path / "big.h5", needed=1 << 20) as tmp:
            ran.append(tmp)  # h5py would be called here; it must not be
    assert not ran and not list(tmp_path.iterdir())


def test_npy_writer_reserves_its_blocks(tmp_path, monkeypatch):
    calls = []
    real = os.posix_fallocate
    monkeypatch.setattr(os, "posix_fallocate", lambda fd, off, size: (calls.append(size), real(fd, off, size)))
    writer = NpyRowWriter(tmp_path / "p.npy", (5, 7, 3))
    writer[1:3] = np.ones((2, 7, 3), np.float16)
    writer.close()
    assert calls and calls[0] == (tmp_path / "p.npy").stat().st_size
    loaded = np.load(tmp_path / "p.npy")
    assert loaded.shape == (5, 7, 3) and loaded.dtype == np.float16 and loaded[1:3].sum() == 2 * 7 * 3


def test_npy_writer_without_posix_fallocate_writes_its_blocks(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "posix_fallocate")
    writer = NpyRowWriter(tmp_path / "p.npy", (600, 500, 3))  # 1.8 MB of data: a 1 MB chunk and a part
    writer.close()
    path = tmp_path / "p.npy"
    assert path.stat().st_blocks * 512 >= 600 * 500 * 3 * 2  # allocated, not sparse
    assert np.load(path).shape == (600, 500, 3) and not np.load(path).any()


def test_model_file_is_refused_before_h5py_writes(tmp_path, monkeypatch):
    model = build_model("unet", K, depth=2, base_filters=4, convs_per_block=1)
    report_free(monkeypatch, 50_000)
    with pytest.raises(NoSpaceError, match=r"m.keras: no space left on the device \(49 KB free, about 1.0 MB"):
        save_model(model, tmp_path / "m.keras", default_classes(K))
    assert not list(tmp_path.iterdir())


# --- each command ----------------------------------------------------------------------------------

def test_predict_probabilities_on_a_full_disk(cli, model_file, tmp_path, monkeypatch):
    write_image(tmp_path / "x.png", make_image(40, 56))
    out = tmp_path / "preds"

    def full(fd, offset, size):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    result = cli("predict", model_file, tmp_path / "x.png", "--out", out, "--probabilities")
    line = assert_one_line(result, str(out / "x_probs.npy"))
    assert "about 14 KB needed" in line  # 40*56*3*2 bytes and the header
    assert not out.exists()  # the folder this predict made, with nothing in it but its mark, is gone


def test_predict_probabilities_larger_than_the_free_space(cli, model_file, tmp_path, monkeypatch):
    write_image(tmp_path / "x.png", make_image(40, 56))
    out = tmp_path / "preds"
    out.mkdir()
    report_free(monkeypatch, 5000)  # the .npy needs 13 440 bytes and its header
    result = cli("predict", model_file, tmp_path / "x.png", "--out", out, "--probabilities")
    assert_one_line(result, str(out / "x_probs.npy"))
    assert not temporaries(out) and not (out / "x_probs.npy").exists()


def test_predict_mask_on_a_full_disk(cli, model_file, tmp_path, monkeypatch):
    write_image(tmp_path / "x.png", make_image(40, 56))
    out = tmp_path / "preds"
    fill_disk_after(monkeypatch, 1, names=("x.png",))
    out.mkdir()
    result = cli("predict", model_file, tmp_path / "x.png", "--out", out)
    assert_one_line(result, str(out / "x.png"))
    assert not temporaries(out) and not (out / "x.png").exists()
    monkeypatch.undo()  # room again: the re-run writes it
    result = cli("predict", model_file, tmp_path / "x.png", "--out", out)
    assert result.exit_code == 0 and (out / "x.png").is_file(), result.output


def test_overlay_on_a_full_disk(cli, tmp_path, monkeypatch):
    write_image(tmp_path / "img.png", make_image(24, 36))
    labels = np.random.default_rng(0).integers(0, 3, (24, 36)).astype(np.uint8)
    import cv2

    cv2.imwrite(str(tmp_path / "mask.png"), labels)
    out = tmp_path / "out"
    out.mkdir()
    fill_disk_after(monkeypatch, 1)
    result = cli("overlay", tmp_path / "img.png", tmp_path / "mask.png", "--out", out / "o.png")
    assert_one_line(result, str(out / "o.png"))
    assert not list(out.iterdir())


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "data"
    classes = default_classes(K, ["sky", "road", "car"])
    for split in ("val",):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for i in range(2):
            write_image(root / split / f"im{i}.png", make_image(32, 32, i))
            import cv2

            cv2.imwrite(str(root / f"{split}annot" / f"im{i}.png"),
                        np.random.default_rng(i).integers(0, K, (32, 32)).astype(np.uint8))
    classes.save(root / "classes.json")
    return root


@pytest.mark.parametrize("nth", [1, 2, 3])  # confusion.csv, confusion.png, evaluation.json
def test_evaluate_out_on_a_full_disk_leaves_no_folder(cli, model_file, dataset, tmp_path, monkeypatch, nth):
    out = tmp_path / "reports" / "rep"
    names = ("confusion.csv", "confusion.png", "evaluation.json")
    fill_disk_after(monkeypatch, 1, names=(names[nth - 1],))
    result = cli("evaluate", model_file, dataset, "--out", out)
    assert_one_line(result, str(out / names[nth - 1]))
    assert not out.exists() and not (tmp_path / "reports").exists()  # the folders this evaluate made are gone


def test_evaluate_out_keeps_a_folder_it_did_not_make(cli, model_file, dataset, tmp_path, monkeypatch):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "mine.txt").write_text("the user's")
    fill_disk_after(monkeypatch, 1, names=("evaluation.json",))
    result = cli("evaluate", model_file, dataset, "--out", out)
    assert_one_line(result, str(out / "evaluation.json"))
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]


@pytest.mark.parametrize("fills", ["m.onnx", "classes.json"])
def test_export_onnx_on_a_full_disk(cli, model_file, tmp_path, monkeypatch, fills):
    from segcli.export import missing_onnx_packages

    if missing_onnx_packages():
        pytest.skip(f"export extra not installed ({', '.join(missing_onnx_packages())})")
    model = tmp_path / "m.keras"
    shutil.copy(model_file, model)
    fill_disk_after(monkeypatch, 1, names=(fills,))
    result = cli("export", model, "--format", "onnx")
    assert_one_line(result, str(tmp_path / fills))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]


def test_export_savedmodel_without_room_for_the_model(cli, model_file, tmp_path, monkeypatch):
    pytest.importorskip("tensorflow")
    model = tmp_path / "m.keras"
    shutil.copy(model_file, model)
    report_free(monkeypatch, 20_000)
    result = cli("export", model, "--format", "savedmodel")
    assert_one_line(result, str(tmp_path / "m_savedmodel"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]


def test_train_without_room_for_its_model_is_one_line(cli, sample_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    report_free(monkeypatch, 200_000)  # the files of json fit; a model file (its weights + 1 MB) does not
    result = cli("train", "unet", sample_data, "--recipe", tiny_recipe(tmp_path, epochs=1), "--out", out)
    line = assert_one_line(result, str(out))
    assert "about 1.0 MB needed" in line
    assert not out.exists() or not temporaries(out)
    assert not (out / "best.keras").exists() and not (out / "model.keras").exists()


@pytest.mark.slow
def test_train_full_disk_mid_run_is_resumable(cli, sample_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    recipe = tiny_recipe(tmp_path, epochs=2)
    with monkeypatch.context() as patch:
        fill_disk_after(patch, 2, names=("history.csv",))  # the second epoch's history.csv fails
        result = cli("train", "unet", sample_data, "--recipe", recipe, "--out", out)
    assert_one_line(result, str(out / "history.csv"))
    assert not temporaries(out)
    result = cli("train", "--resume", out)
    assert result.exit_code == 0, result.output
    assert (out / "model.keras").is_file() and json.loads((out / "metrics.json").read_text())
    assert [row.split(",")[0] for row in (out / "history.csv").read_text().splitlines()[1:]] == ["0", "1"]


# --- a real full disk --------------------------------------------------------------------------------

@pytest.fixture
def small_tmpfs(tmp_path):
    """A 3 MB tmpfs mounted at tmp_path/disk (root only; skips where mounting is not permitted)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.mark.slow
def test_predict_probabilities_on_a_real_full_tmpfs(model_file, tmp_path, small_tmpfs):
    write_image(tmp_path / "x.png", make_image(512, 512))  # probabilities: 512*512*3*2 bytes = 1.5 MB
    (small_tmpfs / "filler").write_bytes(bytes(2 * 1024 * 1024))  # leaves about 1 MB free
    out = small_tmpfs / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "segcli", "predict", str(model_file), str(tmp_path / "x.png"),
                           "--out", str(out), "--probabilities"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])  # not 135 (a bus error)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines and f"{out / 'x_probs.npy'}: no space left on the device" in lines[-1], done.stderr[-2000:]
    assert "about 1.5 MB needed" in lines[-1]
    assert not temporaries(small_tmpfs) and not (out / "x_probs.npy").exists()


@pytest.mark.slow
def test_train_on_a_real_full_tmpfs(sample_data, tmp_path, small_tmpfs):
    """h5py crashed (a segmentation fault, rc 139) on a full disk: the model file is refused before it writes."""
    (small_tmpfs / "filler").write_bytes(bytes(2 * 1024 * 1024 + 512 * 1024))  # leaves about 0.5 MB free
    out = small_tmpfs / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "segcli", "train", "unet", str(sample_data), "--recipe",
                           str(tiny_recipe(tmp_path, epochs=1)), "--out", str(out)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines and "no space left on the device" in lines[-1] and str(out) in lines[-1], done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "h5py" not in done.stderr
    assert not temporaries(small_tmpfs)
