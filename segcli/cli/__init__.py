"""The `segcli` command line: parses arguments, calls the library, prints through segcli.cli.render.

One module per command group (data, models, train, predict + overlay, evaluate, compare, export, bench), each
registered on `app` below; the render package holds every table, progress bar and console. Nothing in the library
imports this package; the work lives in segcli.data, segcli.models and the modules built on them.
"""

from __future__ import annotations

import contextlib
import functools
import sys

from segcli.backend import quiet_tensorflow_logs

quiet_tensorflow_logs()  # keep TensorFlow's C++ log lines out of the output

from typing import Optional

import typer
from typer.core import TyperGroup

from segcli.backend import BACKENDS, import_quietly
from segcli.backend import select as select_backend
from segcli.cli import render
from segcli.cli.joined import leave_now_if_joined
from segcli.errors import SegcliError, describe
from segcli.system import keep_compiled_programs

# Click's own errors (unknown option, missing argument, bad value): the class Typer's BadParameter comes from,
# whether Click is vendored in Typer or installed beside it
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class _OneLineUsageErrors(TyperGroup):
    """The root group: Click's usage errors, raised while the arguments of any command or group are parsed, are
    one line on stderr (render.usage_error), exit 2, like segcli's own errors; --help and a bare `segcli` or
    `segcli data` show the help as before. In the group, so the app object (tests' CliRunner) has it too."""

    def make_context(self, info_name, args, parent=None, **extra):
        with _usage_errors_in_one_line():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        with _usage_errors_in_one_line():
            return super().invoke(ctx)


@contextlib.contextmanager
def _usage_errors_in_one_line():
    try:
        yield
    except _CLICK_ERROR as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # no arguments at all: Typer shows the help
            raise
        render.usage_error(exc)
        raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    help="Semantic image segmentation: train FCN / U-Net, predict masks, evaluate, compare.",
    cls=_OneLineUsageErrors,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks on errors."),
          backend: Optional[str] = typer.Option(
              None, "--backend", metavar="|".join(BACKENDS),
              help="Keras backend (default: KERAS_BACKEND, else ~/.keras/keras.json, else the first installed of "
                   f"{', '.join(BACKENDS)}).")):
    _state["debug"] = debug
    try:
        select_backend(backend)  # before anything imports Keras
        keep_compiled_programs()  # on jax: compiled programs on disk, shared by later runs
    except SegcliError as exc:
        if debug:
            raise
        render.error(str(exc))
        raise typer.Exit(exc.exit_code)
    if not debug:
        import_quietly()  # the start-up lines of TensorFlow and JAX muted
    else:  # loud, but Keras is still told to leave TensorFlow out off its backend
        from segcli.backend import keep_tensorflow_out

        keep_tensorflow_out()


def _guard(fn):
    """Turn SegcliError into one line on stderr and exit 2 (no traceback unless --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except KeyboardInterrupt:
            if _state["debug"]:
                raise
            render.interrupted()
            raise typer.Exit(130)
        except SegcliError as exc:
            if _state["debug"]:
                raise
            render.error(str(exc))
            leave_now_if_joined(exc.exit_code)
            raise typer.Exit(exc.exit_code)
        except Exception as exc:
            if _state["debug"]:
                raise
            render.error(f"{describe(exc)} (run with --debug for the traceback)")  # one line, whatever the message
            leave_now_if_joined(1)
            raise typer.Exit(1)

    return wrapper


def _guard_all(typer_app: typer.Typer) -> None:
    """_guard every command and every group's callback (the root's callback sets --debug and --backend and
    reports its own errors)."""
    for info in typer_app.registered_commands:
        info.callback = _guard(info.callback)
    for group in typer_app.registered_groups:
        callback = group.typer_instance.registered_callback
        if callback is not None and callback.callback is not None:
            callback.callback = _guard(callback.callback)
        _guard_all(group.typer_instance)


# --- the commands, in the order `segcli --help` lists them ---------------------------------------------
from segcli.cli import bench, compare, data, evaluate, export, models, predict, train, tune  # noqa: E402

app.command("train")(train.train_cmd)
app.command("predict")(predict.predict_cmd)
app.command("overlay")(predict.overlay_cmd)
app.command("evaluate")(evaluate.evaluate_cmd)
app.command("compare")(compare.compare_cmd)
app.command("tune")(tune.tune_cmd)
app.command("export")(export.export_cmd)
app.command("bench")(bench.bench_cmd)
app.add_typer(data.app, name="data")
app.add_typer(models.app, name="models")

_guard_all(app)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        render.interrupted()
        sys.exit(130)

