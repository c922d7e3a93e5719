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
