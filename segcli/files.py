"""Writes that never leave a half-written file behind (write beside, then rename), and a lock so that two
processes never write one run folder at once."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Iterator

from segcli.errors import SegcliError

LOCK_NAME = ".segcli.lock"


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; a finished file gets the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def lock_holder(folder: str | Path) -> str | None:
    """Who holds ``folder``'s lock ("process N on HOST"), or None when nobody does. A lock left by a process
    of this host that is gone is stale and does not count; one from another host always does."""
    try:
        info = json.loads((Path(folder) / LOCK_NAME).read_text())
        pid, host = int(info["pid"]), str(info["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:  # alive, another user's
            pass
    return f"process {pid} on {host}"


@contextlib.contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold ``folder``'s lock while the block writes into it; another holder is a one-line error."""
    lock = Path(folder) / LOCK_NAME
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            holder = lock_holder(folder)
            if holder:
                raise SegcliError(f"in use by {holder} (a training writing it); wait for it to end, or delete "
                                  f"{LOCK_NAME} there if none is running", folder) from None
            lock.unlink(missing_ok=True)  # stale
    else:
        raise SegcliError(f"cannot take {LOCK_NAME}", folder)
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
