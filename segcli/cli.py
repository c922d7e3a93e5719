"""The `segcli` command line: parses arguments, calls the library, prints with rich.

Nothing imports this module; the work lives in segcli.data, segcli.models and the modules
built on them.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import List, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of the output

import typer
from rich.console import Console
from rich.table import Table

from segcli.errors import SegcliError

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    help="Semantic image segmentation: train FCN / U-Net, predict masks, evaluate, compare.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Inspect and check datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks on errors.")):
    _state["debug"] = debug


# --- commands -------------------------------------------------------------------------------
# (each command below parses options, calls one library function and prints its result)

# @@DATA_COMMANDS@@

# @@MODELS_COMMANDS@@

# @@TRAIN_COMMANDS@@

# @@PREDICT_COMMANDS@@

# @@EVALUATE_COMMANDS@@

# @@COMPARE_COMMANDS@@

# @@EXPORT_COMMANDS@@

# @@BENCH_COMMANDS@@


def _guard(fn):
    """Turn SegcliError into one line on stderr and exit 2 (no traceback unless --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.TyperException, KeyboardInterrupt):
            raise
        except SegcliError as exc:
            if _state["debug"]:
                raise
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True, markup=True)
            raise typer.Exit(exc.exit_code)
        except Exception as exc:
            if _state["debug"]:
                raise
            err_console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(1)

    return wrapper


def _guard_all(typer_app: typer.Typer) -> None:
    for info in typer_app.registered_commands:
        info.callback = _guard(info.callback)
    for group in typer_app.registered_groups:
        _guard_all(group.typer_instance)


_guard_all(app)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
