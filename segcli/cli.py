"""The `segcli` command line: parses arguments, calls the library, prints with rich.

Nothing imports this module; the work lives in segcli.data, segcli.models and the modules
built on them.
"""

from __future__ import annotations

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


def main() -> None:
    """Console-script entry: bad input becomes one line on stderr and exit code 2."""
    debug = "--debug" in sys.argv[1:]
    try:
        app(standalone_mode=False)
    except SegcliError as exc:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(1)
    except Exception as exc:  # click's usage errors and anything unexpected
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                          highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
