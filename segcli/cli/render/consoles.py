"""The consoles and what every command shows alike: progress bars and messages (`RichProgress`, the library's
segcli.progress on a rich console), error lines, and percentages.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

import segcli.progress

console = Console()
err_console = Console(stderr=True)


# --- progress (segcli.progress) ------------------------------------------------------------------

class RichProgress(segcli.progress.Progress):
    """The library's progress on a rich console: messages and notes as lines, each task a transient bar
    (its name, the bar, done/total, elapsed time, the info text) that is gone when the task ends; `quiet`: nothing.
    Used as a context manager, it also closes the bars an error or Ctrl-C left open."""

    def __init__(self, on: Console | None = None, *, quiet: bool = False):
        self.console = on or console
        self.quiet = quiet
        self._bars: dict[str, tuple[Progress, object]] = {}

    def message(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, highlight=False, markup=False)

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(Text.assemble(("note:", "yellow"), f" {text}"), highlight=False)

    def start(self, task: str, total: int | None = None) -> None:
        self.end(task)
        if self.quiet or not self.console.is_interactive:  # a file or a pipe: a transient bar draws nothing,
            return  # and rich ends each with an empty line there
        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TextColumn("{task.fields[info]}"), console=self.console, transient=True)
        self._bars[task] = (bar, bar.add_task(escape(task), total=total, info=""))
        bar.start()

    def advance(self, task: str, done: int, total: int | None = None, info: str = "") -> None:
        if task in self._bars:
            bar, task_id = self._bars[task]
            bar.update(task_id, completed=done, info=escape(info), **({} if total is None else {"total": total}))

    def end(self, task: str) -> None:
        if task in self._bars:
            self._bars.pop(task)[0].stop()

    def close(self) -> None:
        for task in list(self._bars):
            self.end(task)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- errors (the root's _guard and main) ----------------------------------------------------------

def error(message: str) -> None:
    err_console.print(Text.assemble(("error:", "bold red"), f" {message}"), highlight=False, soft_wrap=True)


def usage_error(exc) -> None:
    """A usage error of Click's (unknown option, missing argument, bad value) as one `error` line, with where
    the usage is: "error: No such option: --bogus (see segcli train --help)"."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and ctx.command.get_help_option(ctx) is not None:
        message = f"{message.rstrip('.')} (see {ctx.command_path} {ctx.help_option_names[0]})"
    error(message)


def interrupted() -> None:
    err_console.print("interrupted")
