"""What a killed writer leaves (hidden temporaries named with TMP_TAG and its pid) is removed by its next run of
the same output, and nothing else: segcli.files.remove_stale_temporaries, move_aside and overlay's use of them
(export's is in test_export.py, predict's in test_predict.py, compare's in test_compare.py)."""

import os
import subprocess
import sys

import cv2
import numpy as np

from segcli.data import write_image
from segcli.files import TMP_TAG, move_aside, remove_stale_temporaries


def _gone_pid() -> int:
    """The pid of a process that has ended (as a killed writer's)."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, timeout=60).stdout)


def test_only_the_outputs_own_temporaries_of_gone_writers_are_removed(tmp_path):
    gone = _gone_pid()
    aside = move_aside(_made(tmp_path / "export_savedmodel", folder=True))  # an earlier export moved aside
    assert aside.name.startswith(f".export_savedmodel{TMP_TAG}{os.getpid()}-") and (aside / "f").is_file()
    stale = [_made(tmp_path / f".export_savedmodel{TMP_TAG}{gone}-0a1b2c3d", folder=True),
             _made(tmp_path / f".export_savedmodel{TMP_TAG}old-0a1b2c3d", folder=True),  # an older segcli's
             _made(tmp_path / f".m.onnx{TMP_TAG}{gone}-0a1b2c3d.onnx")]
    kept = [aside,  # its writer (this process) runs
            _made(tmp_path / f".m.onnx{TMP_TAG}draft.txt"), _made(tmp_path / f".m2.onnx{TMP_TAG}{gone}-0a1b2c3d.onnx"),
            _made(tmp_path / f"m.onnx{TMP_TAG}{gone}-0a1b2c3d.onnx"), _made(tmp_path / ".m.onnx.bak")]
    os.symlink(tmp_path / "m.onnx.target", tmp_path / f".m.onnx{TMP_TAG}{gone}-1a2b3c4d.onnx")  # a link: kept
    removed = remove_stale_temporaries(tmp_path / "export_savedmodel", tmp_path / "m.onnx")
    assert sorted(removed) == sorted(stale) and not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept) and (tmp_path / f".m.onnx{TMP_TAG}{gone}-1a2b3c4d.onnx").is_symlink()


def test_an_overlay_removes_what_a_killed_overlay_of_it_left(cli, tmp_path):
    gone = _gone_pid()
    write_image(tmp_path / "img.png", np.full((12, 16, 3), 100, np.uint8))
    cv2.imwrite(str(tmp_path / "mask.png"), np.zeros((12, 16), np.uint8))
    stale = _made(tmp_path / f".o.png{TMP_TAG}{gone}-0a1b2c3d.png")
    kept = _made(tmp_path / f".p.png{TMP_TAG}{gone}-0a1b2c3d.png")  # another output's
    result = cli("overlay", tmp_path / "img.png", tmp_path / "mask.png", "--out", tmp_path / "o.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o.png").is_file() and not stale.exists() and kept.exists()


def _made(path, folder=False):
    if folder:
        path.mkdir()
        (path / "f").write_bytes(b"partial")
    else:
        path.write_bytes(b"partial")
    return path
