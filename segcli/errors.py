"""One exception type for bad input, so the CLI can print one line and exit 2."""

from __future__ import annotations

from pathlib import Path


class SegcliError(Exception):
    """Bad input or usage: the message names the file (when there is one) and the problem."""

    exit_code = 2

    def __init__(self, problem: str, path: str | Path | None = None):
        self.problem = problem
        self.path = None if path is None else Path(path)
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


class DataError(SegcliError):
    """An image, mask, classes file or dataset folder that cannot be used."""


class ModelError(SegcliError):
    """An unknown architecture or option, or a file that is not a segcli/Keras model."""


def first_line(exc: BaseException, empty: str = "") -> str:
    """The first line of ``exc``'s message (TensorFlow's and h5py's run to pages), or ``empty`` when it has none:
    how a caught foreign exception goes into a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else empty


def describe(exc: BaseException) -> str:
    """``exc`` as "TypeName: first line of its message" (just "TypeName" when it has none)."""
    line = first_line(exc)
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__
