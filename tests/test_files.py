"""segcli.files: atomic writes and the run-folder lock."""

import json
import os
import socket
import subprocess
import sys

import pytest

from segcli.errors import SegcliError
from segcli.files import LOCK_NAME, atomic_path, folder_lock, lock_holder, write_json


def test_atomic_path_leaves_nothing_when_the_block_fails(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert json.loads(target.read_text()) == {"a": 1}  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary left


def test_folder_lock_refuses_a_second_holder_and_is_released(tmp_path):
    with folder_lock(tmp_path):
        assert lock_holder(tmp_path) == f"process {os.getpid()} on {socket.gethostname()}"
        with pytest.raises(SegcliError, match="in use by process"):
            with folder_lock(tmp_path):
                pass
        assert (tmp_path / LOCK_NAME).is_file()  # the refused attempt did not remove the holder's lock
    assert not (tmp_path / LOCK_NAME).exists() and lock_holder(tmp_path) is None


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": int(gone.stdout), "host": socket.gethostname()}))
    assert lock_holder(tmp_path) is None
    with folder_lock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_a_lock_from_another_host_counts(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    assert lock_holder(tmp_path) == "process 1 on elsewhere.example"
    with pytest.raises(SegcliError, match=f"delete {LOCK_NAME}"):
        with folder_lock(tmp_path):
            pass
