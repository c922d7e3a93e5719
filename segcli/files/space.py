"""A full disk as an ordinary error: the one message ("PATH: no space left on the device (N MB free, about M MB
needed)"), the context manager that turns ENOSPC/EDQUOT (and TensorFlow's or h5py's words for it) into it, a
check before large writes, and block reservation so a memory map cannot die of a bus error."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Iterator

from segcli.errors import SegcliError

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})  # a full disk, an exceeded quota
_NO_SPACE_TEXTS = tuple(os.strerror(code) for code in NO_SPACE_ERRNOS)  # TensorFlow and h5py put them in their text
_MB = 1024 * 1024


class NoSpaceError(SegcliError):
    """A write that found its disk full (or its quota spent): the path, the space free and needed, in one line."""


def free_space(path: str | Path) -> int | None:
    """The bytes free to this user on the disk that holds ``path`` (or its nearest existing parent); None when
    unknown."""
    for folder in (Path(path), *Path(path).parents):
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            continue
    return None


def _amount(size: int) -> str:
    """Bytes as a message shows them: MB with one decimal, KB under a tenth of a MB."""
    return f"{size / _MB:.1f} MB" if size >= _MB // 10 else f"{-(-size // 1024)} KB"


def no_space(path: str | Path, needed: int | None = None) -> NoSpaceError:
    """The one message for a full disk: "PATH: no space left on the device (N MB free, about M MB needed)"."""
    free = free_space(Path(path).parent)
    facts = [f"{_amount(free)} free"] if free is not None else []
    if needed:
        facts.append(f"about {_amount(needed)} needed")
    return NoSpaceError("no space left on the device" + (f" ({', '.join(facts)})" if facts else ""), path)


def is_no_space(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk is full: an OSError with ENOSPC/EDQUOT, or a library's error (TensorFlow's,
    h5py's) whose text carries the system's words for it."""
    if isinstance(exc, SegcliError):
        return False
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno in NO_SPACE_ERRNOS
    return any(text in str(exc) for text in _NO_SPACE_TEXTS)


@contextlib.contextmanager
def no_space_errors(path: str | Path, needed: int | None = None) -> Iterator[None]:
    """Turn a full disk inside the block into ``no_space(path, needed)``; every other error passes unchanged."""
    try:
        yield
    except Exception as exc:
        if not is_no_space(exc):
            raise
        raise no_space(path, needed) from None


def check_free_space(path: str | Path, needed: int) -> None:
    """Refuse, before writing, a file of about ``needed`` bytes at ``path`` that its disk cannot hold: for the
    writers whose library crashes on a full disk rather than raising (h5py, a memory map)."""
    free = free_space(Path(path).parent)
    if free is not None and free < needed:
        raise no_space(path, needed)


def allocate(fd: int, size: int) -> None:
    """Reserve ``size`` bytes of the open file ``fd`` on its disk, so that a full disk fails here, as ENOSPC, not
    later in a memory map (a bus error): posix_fallocate where the system has it, else writing zeros."""
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, size)
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS):
                raise
    start = os.lseek(fd, 0, os.SEEK_END)
    chunk = bytes(min(_MB, max(size - start, 0)))
    for offset in range(start, size, len(chunk) or 1):
        os.pwrite(fd, chunk[:size - offset], offset)
