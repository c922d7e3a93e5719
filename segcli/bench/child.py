"""The child-process protocol: run one library function in a fresh Python (its own peak memory, nothing left
behind in this process) and read back its JSON result.

The parent runs `python -m segcli.bench --child MODULE:FUNCTION SPEC_JSON`; the child calls FUNCTION(spec) and
prints one line, MARK + the JSON of what it returned. Anything else the child prints is ignored; a failure is
reported with the last line of its stderr.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

from segcli.errors import SegcliError

CHILD_FLAG = "--child"
MARK = "SEGCLI_BENCH_RESULT "


def run_in_child(target: str, spec: dict, *, what: str, timeout: float = 3600) -> dict:
    """target(spec) ("module:function") in a child process; `what` names it in errors."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        proc = subprocess.run([sys.executable, "-m", "segcli.bench", CHILD_FLAG, target, json.dumps(spec)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SegcliError(f"{what} took longer than {timeout:.0f} s") from None
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SegcliError(f"{what} child process failed (exit {proc.returncode}): {tail}")
    return json.loads(lines[-1][len(MARK):])


def child_main(argv: list[str]) -> int:
    """In the child: argv = [CHILD_FLAG, "module:function", spec JSON]."""
    if len(argv) != 3 or argv[0] != CHILD_FLAG:
        print("usage: segcli bench (this module runs as a child process of it)", file=sys.stderr)
        return 2
    module, _, function = argv[1].partition(":")
    result = getattr(importlib.import_module(module), function)(json.loads(argv[2]))
    print(MARK + json.dumps(result), flush=True)
    return 0
