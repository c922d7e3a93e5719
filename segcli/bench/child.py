"""The child-process protocol: run one library function in a fresh Python (its own peak memory, nothing left
behind in this process) and read back its JSON result.

The parent runs `python -m segcli.bench --child MODULE:FUNCTION SPEC_JSON` (MODULE: a module name, or the path
of a .py file, e.g. benchmarks/torch_reference.py); the child calls FUNCTION(spec) and prints one line, MARK +
the JSON of what it returned. Anything else the child prints is ignored; a failure is reported with the last
line of its stderr, and an ImportError in the child is raised again in the parent (so a section whose child
needs TensorFlow on the jax backend says so, as one that runs in-process does).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys

from segcli.errors import SegcliError

CHILD_FLAG = "--child"
MARK = "SEGCLI_BENCH_RESULT "
IMPORT_MARK = "SEGCLI_BENCH_IMPORT_ERROR "  # the child could not import what it needs: an ImportError in the parent


def run_in_child(target: str, spec: dict, *, what: str, timeout: float = 3600) -> dict:
    """target(spec) ("module:function" or "path/to/file.py:function") in a child process; `what` names it in
    errors."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        proc = subprocess.run([sys.executable, "-m", "segcli.bench", CHILD_FLAG, target, json.dumps(spec)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SegcliError(f"{what} took longer than {timeout:.0f} s") from None
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    missing = [line for line in proc.stdout.splitlines() if line.startswith(IMPORT_MARK)]
    if missing:  # e.g. TensorFlow on the jax backend: the caller says why the section cannot run
        error = json.loads(missing[-1][len(IMPORT_MARK):])
        raise ImportError(f"{what}: {error['message']}", name=error["name"])
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SegcliError(f"{what} child process failed (exit {proc.returncode}): {tail}")
    return json.loads(lines[-1][len(MARK):])


def _load(module: str):
    """The module named `module`, or the one in the file `module` (ends with .py)."""
    if not module.endswith(".py"):
        return importlib.import_module(module)
    spec = importlib.util.spec_from_file_location(os.path.basename(module)[:-3], module)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def child_main(argv: list[str]) -> int:
    """In the child: argv = [CHILD_FLAG, "module:function", spec JSON]."""
    if len(argv) != 3 or argv[0] != CHILD_FLAG:
        print("usage: segcli bench (this module runs as a child process of it)", file=sys.stderr)
        return 2
    module, _, function = argv[1].rpartition(":")
    try:
        result = getattr(_load(module), function)(json.loads(argv[2]))
    except ImportError as exc:
        print(IMPORT_MARK + json.dumps({"name": exc.name, "message": str(exc)}), flush=True)
        raise
    print(MARK + json.dumps(result), flush=True)
    return 0
