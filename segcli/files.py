"""Writes that never leave a half-written file behind (write beside, then rename), and a lock so that two
processes never write one run folder at once."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterator

from segcli.errors import SegcliError

LOCK_NAME = ".segcli.lock"
MARKER_NAME = ".segcli"  # in every folder segcli makes (run, export, compare): only those may be replaced by --force
TMP_TAG = ".segcli-tmp-"  # in the name of every temporary file; a killed writer's leftovers are found by it


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_TAG}", suffix=suffix or path.suffix, dir=path.parent)
    except OSError as exc:
        ensure_writable_dir(path.parent)  # names the folder and the reason in one line
        raise SegcliError(f"cannot write {path.name} ({exc.strerror or exc})", path.parent) from None
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


def ensure_writable_dir(folder: str | Path) -> Path:
    """Create ``folder`` (with its parents) if needed; a one-line error naming it when it cannot hold files
    (a file in the way, no permission, a read-only disk). Call it before the work whose output goes there."""
    folder = Path(folder)
    _nearest_existing(folder)
    _probe_writable(folder, make=True)
    return folder


def remove_leftovers(folder: str | Path) -> list[Path]:
    """Delete the temporary files (and folders) a killed segcli writer left in ``folder`` and below."""
    removed = []
    for path in sorted(Path(folder).rglob(f"*{TMP_TAG}*"), reverse=True):
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def mark_segcli_folder(folder: str | Path, kind: str) -> None:
    """Label ``folder`` as made by segcli (``kind``: run, export, compare), so --force may replace it later."""
    write_json(Path(folder) / MARKER_NAME, {"made_by": "segcli", "kind": kind})


def segcli_folder_kind(folder: str | Path) -> str | None:
    """The kind of segcli folder ``folder`` is, or None when segcli did not make it. Run folders of older
    segcli versions, which had no marker, are known by their run.json and recipe.toml."""
    folder = Path(folder)
    try:
        return str(json.loads((folder / MARKER_NAME).read_text())["kind"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if (folder / "run.json").is_file() and (folder / "recipe.toml").is_file():
        return "run"
    return None


def check_replaceable(folder: str | Path, force: bool, what: str = "output folder", also: str = "",
                      kind: str | None = None) -> bool:
    """Whether ``folder`` holds anything to replace (False: missing or empty). An existing folder is replaced
    only with ``force`` and only when segcli made it (as a ``kind`` folder, when given); anything else is a
    one-line error naming it. ``also`` ends the message that asks for --force (", or --resume to continue it")."""
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return False
    if not folder.is_dir() or folder.is_symlink():
        raise SegcliError("exists and is not a folder; segcli will not replace it", folder)
    if not any(folder.iterdir()):
        return False
    found = segcli_folder_kind(folder)
    if found is None:
        raise SegcliError("exists, is not empty and was not made by segcli; choose another --out (--force "
                          "replaces only segcli's own run, export and compare folders)", folder)
    if kind is not None and found != kind:
        raise SegcliError(f"is a segcli {found} folder, not a {kind} folder; choose another --out", folder)
    if not force:
        raise SegcliError(f"{what} exists and is not empty; pass --force to replace it{also}", folder)
    return True


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


def check_writable_dir(folder: str | Path) -> Path:
    """Like ``ensure_writable_dir`` but creates nothing: ``folder``, or its nearest existing parent when it
    does not exist yet, must be a folder that takes new files; else a one-line error naming it. For checks
    before the work, so that a failure later (a bad model, a bad flag) leaves no empty folder behind."""
    folder = Path(folder)
    parent = _nearest_existing(folder)
    if parent is not None:
        _probe_writable(parent)
    return folder


def _nearest_existing(folder: Path) -> Path | None:
    """``folder``, or its nearest parent that exists (None when none does); a one-line error when that is a file."""
    for parent in (folder, *folder.parents):
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise SegcliError("is a file, not a folder", parent)
            return parent
    return None


def _probe_writable(folder: Path, make: bool = False) -> None:
    """Create ``folder`` (``make``) and a file in it, then delete the file; a one-line error naming it if it cannot."""
    try:
        if make:
            folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".probe{TMP_TAG}", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise SegcliError(f"cannot write here ({exc.strerror or exc})", folder) from None
