"""The one reader of TOML files (recipes): segcli.recipe and segcli.models.registry both read through it."""

from __future__ import annotations

import tomllib
from pathlib import Path

from segcli.errors import SegcliError


def read_toml(path: str | Path, error: type[SegcliError] = SegcliError) -> dict:
    """A TOML file's tables. A missing file, a folder, bad TOML or an unreadable file is `error` (SegcliError or
    a subclass) naming the file and the problem in one line."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error("no such recipe file", path) from None
    except IsADirectoryError:
        raise error("is a directory, not a recipe file", path) from None
    except UnicodeDecodeError:
        raise error("not valid TOML: a binary file, not text", path) from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"not valid TOML: {exc}", path) from None
    except OSError as exc:
        raise error(f"cannot read: {exc.strerror or exc}", path) from None
