"""Image sizes written as HEIGHTxWIDTH: the one parser for every --size flag and for the library (export)."""

from __future__ import annotations

import re

from segcli.errors import SegcliError

_SIZE = re.compile(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*")


def parse_size(size, what: str = "--size") -> tuple[int, int] | None:
    """None -> None; "HxW" (or "H,W") or a (height, width) pair -> (height, width); both must be >= 1.

    Anything else raises SegcliError naming `what` (the flag or setting the size came from)."""
    if size is None:
        return None
    try:
        if isinstance(size, str):
            match = _SIZE.fullmatch(size)
            height, width = (int(match[1]), int(match[2])) if match else (0, 0)
        else:
            height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        height = width = 0
    if height < 1 or width < 1:
        raise SegcliError(f"bad {what}: expected HEIGHTxWIDTH with both >= 1, e.g. 368x480, got {size!r}")
    return height, width


def round_up(n, multiple: int):
    """``n`` rounded up to a multiple of ``multiple`` (an output stride, a pad multiple): 37, 8 -> 40.

    Plain arithmetic, so ``n`` may be an int, a NumPy array or a TensorFlow tensor."""
    return -(-n // multiple) * multiple
