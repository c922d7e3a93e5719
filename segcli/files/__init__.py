"""Writes that never leave a half-written file behind (write beside, then rename), and a lock so that two
processes never write one run folder at once; a full disk as one line (`space`, re-exported here)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import socket
from pathlib import Path
from typing import Iterator

from segcli.errors import SegcliError
from segcli.files.space import (NO_SPACE_ERRNOS, NoSpaceError, allocate, check_free_space, free_space,  # noqa: F401
                                 is_no_space, no_space, no_space_errors)

LOCK_NAME = ".segcli.lock"
MARKER_NAME = ".segcli"  # in every folder segcli makes (run, export, compare): only those may be replaced by --force
TMP_TAG = ".segcli-tmp-"  # in the name of every temporary file; a killed writer's leftovers are found by it
_WRITER_PID = re.compile(re.escape(TMP_TAG) + r"(\d+)-")  # _new_temp's names: TMP_TAG, the writer's pid, "-"
def _new_temp(path: Path, suffix: str, make) -> Path:
    """``make(name)`` at a fresh temporary name beside ``path``: ``.NAME.segcli-tmp-PID-RANDOM.SUFFIX`` (a killed
    writer's leftover is known by TMP_TAG, and whether its writer still runs by PID)."""
    while True:
        tmp = path.with_name(f".{path.name}{TMP_TAG}{os.getpid()}-{secrets.token_hex(4)}{suffix}")
        try:
            make(tmp)
            return tmp
        except FileExistsError:
            continue


def new_temp_file(path: str | Path, suffix: str | None = None) -> Path:
    """Create an empty file beside ``path`` under a temporary name (_new_temp), with the mode any new file gets:
    0666 less the umask, as the kernel applies it (tempfile.mkstemp's files are 0600)."""
    path = Path(path)
    return _new_temp(path, path.suffix if suffix is None else suffix,
                     lambda tmp: os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)))


def new_temp_dir(path: str | Path) -> Path:
    """Create an empty folder beside ``path`` under a temporary name (_new_temp), with the mode any new folder
    gets: 0777 less the umask (tempfile.mkdtemp's folders are 0700)."""
    return _new_temp(Path(path), "", lambda tmp: tmp.mkdir(0o777))


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (another user's counts)."""
    if pid <= 0:  # os.kill would ask about a process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except (OverflowError, ValueError):
        return False
    return True


def _writer_gone(name: str) -> bool:
    """Whether the writer of the temporary ``name`` is gone: its pid (in _new_temp's names) runs no process on
    this host; a name without a pid comes from an older segcli, whose writer is long gone."""
    writer = _WRITER_PID.search(name)
    return writer is None or not _alive(int(writer.group(1)))


def _remove_temporary(path: Path, folders: bool) -> bool:
    """Delete the temporary ``path``: a regular file, or a folder when ``folders`` (never a link, nor what it
    points to). True when it went."""
    try:
        if path.is_symlink():
            return False
        if path.is_file():
            path.unlink()
        elif folders and path.is_dir():
            shutil.rmtree(path)
        else:
            return False
    except OSError:
        return False
    return True


def remove_dead_writers_temp_files(folder: str | Path, folders: bool = False) -> list[Path]:
    """Delete the temporary files (and folders, with ``folders``) that segcli writers which are gone left
    directly in ``folder`` (not below): for a folder segcli writes into without a lock, such as predict's --out
    or a compare folder. Only what is named like segcli's temporaries (``.NAME`` with TMP_TAG) goes, never a
    link, and never one whose writer still runs on this host."""
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return []
    return [path for path in entries
            if path.name.startswith(".") and TMP_TAG in path.name and _writer_gone(path.name)
            and _remove_temporary(path, folders)]


def _temporary_of(name: str) -> re.Pattern:
    """The names segcli gives the temporaries of the output ``name`` (_new_temp, move_aside): ``.NAME``,
    TMP_TAG, the writer's pid and "-" (absent in an older segcli's names), an optional "old-", 8 hex digits,
    an optional suffix (``.onnx``, ``.weights.h5``)."""
    return re.compile(r"\." + re.escape(name) + re.escape(TMP_TAG) + r"(?:\d+-)?(?:old-)?[0-9a-f]{8}"
                      r"(?:\.[A-Za-z0-9_.]+)?")


def remove_stale_temporaries(*outputs: str | Path) -> list[Path]:
    """Delete what killed segcli writers left for these outputs: beside each output, the files and folders
    named as segcli names that output's temporaries (``.NAME.segcli-tmp-PID-HEX.SUFFIX``, _temporary_of) whose
    writer is gone. A writer calls it at the start of its next run of the same output (export, overlay,
    evaluate's reports); nothing else in the folder is touched, not even another output's temporaries, nor
    those of a writer that still runs."""
    wanted: dict[Path, list[re.Pattern]] = {}
    for out in outputs:
        out = Path(out)
        wanted.setdefault(out.parent, []).append(_temporary_of(out.name))
    removed = []
    for folder, patterns in wanted.items():
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        removed += [path for path in entries
                    if any(p.fullmatch(path.name) for p in patterns) and _writer_gone(path.name)
                    and _remove_temporary(path, folders=True)]
    return removed


def move_aside(path: str | Path) -> Path:
    """Rename ``path`` (a file or folder about to be replaced) to a temporary name beside it, which the caller
    removes once the new one is in place (a kill in between leaves it for remove_stale_temporaries)."""
    path = Path(path)

    def rename(tmp: Path) -> None:
        if exists_or_link(tmp):
            raise FileExistsError(tmp)
        os.rename(path, tmp)

    return _new_temp(path, "", rename)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` only if the block succeeds. A full disk is
    ``no_space`` naming `path` (and nothing is left); ``needed``: the bytes the file will take about, refused
    before the block runs when the disk has fewer free."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if needed is not None:
            check_free_space(path, needed)
        tmp_path = new_temp_file(path, suffix or path.suffix)  # the usual permissions, not mkstemp's 0600
    except OSError as exc:
        if is_no_space(exc):
            raise no_space(path, needed) from None
        ensure_writable_dir(path.parent)  # names the folder and the reason in one line
        raise SegcliError(f"cannot write {path.name} ({exc.strerror or exc})", path.parent) from None
    try:
        with no_space_errors(path, needed):
            yield tmp_path
            os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def missing_folders(folder: str | Path) -> list[Path]:
    """``folder`` and its parents that do not exist yet, innermost first: what ``ensure_writable_dir`` would make,
    for ``remove_empty_folders`` to take back after a failure."""
    folder = Path(folder)
    return [f for f in (folder, *folder.parents) if not f.exists() and not f.is_symlink()]


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove ``folders`` (innermost first, as ``missing_folders`` lists them) while they are empty: a writer that
    failed leaves no empty folder it made."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


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


def output_target(path: str | Path) -> Path:
    """Where a write to ``path`` lands: absolute, every link followed (one at its end, and those among its
    folders); a tail that does not exist yet is kept as given."""
    return Path(os.path.realpath(os.path.abspath(path)))


def _via_link(path: Path) -> str:
    """"links to TARGET, which " when ``path`` leads elsewhere through a link (so a message names both), else ""."""
    target = output_target(path)
    return f"links to {target}, which " if target != Path(os.path.abspath(path)) else ""


def guard_output(out: str | Path, data=(), what: str = "--out") -> Path:
    """The guard every writer calls on its output before any work (predict, overlay, evaluate's reports,
    export, run folders of train, compare and tune): ``out`` judged by where it leads, every link followed.
    Refused, in one line naming ``out`` and the link's target, when the target is one of ``data`` (the files
    and folders the command reads: the dataset, the inputs, the model) or lies inside one of those folders.
    Returns the target; creates nothing."""
    out = Path(out)
    target = output_target(out)
    for source in data:
        if source is None:
            continue
        real = output_target(source)
        if target == real or real in target.parents:
            inside = "is" if target == real else "is inside"
            raise SegcliError(f"{_via_link(out)}{inside} {'the input' if target == real else 'the data folder'} "
                              f"{source}: segcli does not write among its inputs; choose another {what}", out)
    return target


def check_replaceable(folder: str | Path, force: bool, what: str = "output folder", also: str = "",
                      kind: str | None = None) -> bool:
    """Whether ``folder`` holds anything to replace (False: missing or empty). An existing folder is replaced
    only with ``force`` and only when segcli made it (as a ``kind`` folder, when given); anything else is a
    one-line error naming it. ``also`` ends the message that asks for --force (", or --resume to continue it").
    A link is judged by its target (guard_output), and a message about it names both."""
    folder = Path(folder)
    via = _via_link(folder)
    if not folder.exists():
        if folder.is_symlink():
            raise SegcliError(f"{via or 'is a link to nothing, which '}does not exist; segcli will not write "
                              "through a broken link, choose another --out", folder)
        return False
    if not folder.is_dir():
        raise SegcliError(f"{via}exists and is not a folder; segcli will not replace it", folder)
    if not any(folder.iterdir()):
        return False
    found = segcli_folder_kind(folder)
    if found is None:
        raise SegcliError(f"{via}exists, is not empty and was not made by segcli; choose another --out (--force "
                          "replaces only segcli's own run, export and compare folders)", folder)
    if kind is not None and found != kind:
        raise SegcliError(f"{via}is a segcli {found} folder, not a {kind} folder; choose another --out", folder)
    if not force:
        raise SegcliError(f"{what} {via}exists and is not empty; pass --force to replace it{also}", folder)
    return True


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _read_lock(lock: Path) -> str | None:
    """The lock file's text; None when there is no lock file."""
    try:
        return lock.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except OSError:
        return ""  # there, but unreadable: counts as held


def _holder_of(text: str) -> str | None:
    """Who a lock file's text names ("process N on HOST"), None when it is stale (a process of this host that is
    gone). A text that is not a whole lock (empty, cut short) is a lock being taken: it counts as held."""
    try:
        info = json.loads(text)
        pid, host = int(info["pid"]), str(info["host"])
    except (ValueError, KeyError, TypeError):
        return "a process that is taking its lock"
    if host == socket.gethostname() and not _alive(pid):
        return None
    return f"process {pid} on {host}"


def lock_holder(folder: str | Path) -> str | None:
    """Who holds ``folder``'s lock ("process N on HOST"), or None when nobody does. A lock left by a process
    of this host that is gone is stale and does not count; one from another host always does, and so does a
    lock file that is not whole (one being taken)."""
    text = _read_lock(Path(folder) / LOCK_NAME)
    return None if text is None else _holder_of(text)


@contextlib.contextmanager
def _taking_turns(folder: Path) -> Iterator[None]:
    """Processes that remove a stale lock take turns: an flock of the folder (released by the kernel when its
    holder dies, so it never goes stale itself); without flock (Windows, some network file systems), no turns."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # releases the flock


def _link_lock(lock: Path, text: str) -> bool:
    """Create ``lock`` holding ``text``, atomically: written whole under a temporary name, then hard-linked to
    the lock's name, which fails when it exists. True when taken, False when the lock exists."""
    tmp = new_temp_file(lock)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.link(tmp, lock)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
            raise
    finally:
        tmp.unlink(missing_ok=True)
    try:  # a file system without hard links: created exclusively, then filled (readers take it as held meanwhile)
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return True


@contextlib.contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold ``folder``'s lock while the block writes into it; another holder is a one-line error. Taking it is
    atomic (of processes starting at once, one gets it); a stale lock (its process is gone) is taken over."""
    folder = Path(folder)
    lock = folder / LOCK_NAME
    mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "token": secrets.token_hex(8)})
    for _ in range(100):  # each round: take it, or find it held, or remove a stale one and try again
        try:
            if _link_lock(lock, mine):
                break
        except FileNotFoundError:
            if folder.is_dir():
                continue  # our temporary was swept by the cleanup of the folder's holder: write it again
            raise SegcliError(f"cannot take {LOCK_NAME}: no such folder", folder) from None
        except OSError as exc:
            raise SegcliError(f"cannot take {LOCK_NAME} ({exc.strerror or exc})", folder) from None
        text = _read_lock(lock)
        if text is None:
            continue  # released meanwhile
        holder = _holder_of(text)
        if holder:
            raise SegcliError(f"in use by {holder} (a training writing it); wait for it to end, or delete "
                              f"{LOCK_NAME} there if none is running", folder) from None
        with _taking_turns(folder):  # stale: removed only if it is still that stale lock, not a new holder's
            if _read_lock(lock) == text:
                lock.unlink(missing_ok=True)
    else:
        raise SegcliError(f"cannot take {LOCK_NAME}: other processes keep taking it", folder)
    try:
        yield
    finally:
        if _read_lock(lock) == mine:  # ours (never another's, should ours have been taken over)
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


def exists_or_link(path: Path) -> bool:
    """Whether something is at ``path``: a file, a folder, or a link (even a broken one)."""
    return path.exists() or path.is_symlink()


def _nearest_existing(folder: Path) -> Path | None:
    """``folder``, or its nearest parent that exists (None when none does); a one-line error when that is a file."""
    for parent in (folder, *folder.parents):
        if exists_or_link(parent):
            if not parent.is_dir():
                raise SegcliError("is a file, not a folder", parent)
            return parent
    return None


def _probe_writable(folder: Path, make: bool = False) -> None:
    """Create ``folder`` (``make``) and a file in it, then delete the file; a one-line error naming it if it cannot."""
    try:
        if make:
            folder.mkdir(parents=True, exist_ok=True)
        os.unlink(new_temp_file(folder / "probe"))
    except OSError as exc:
        if is_no_space(exc):
            raise no_space(folder) from None
        raise SegcliError(f"cannot write here ({exc.strerror or exc})", folder) from None
