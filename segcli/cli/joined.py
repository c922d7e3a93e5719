"""A failed process of a several-process training leaves at once (the error guard and `train`'s interrupt)."""

from __future__ import annotations

import os
import sys


def leave_now_if_joined(code: int) -> None:
    """A process of a several-process training that failed exits at once: a normal exit would wait at JAX's
    shutdown barrier for peers that are gone, then abort with a C++ trace."""
    distribute = sys.modules.get("segcli.training.distribute")
    if distribute is not None and distribute.joined_others():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
