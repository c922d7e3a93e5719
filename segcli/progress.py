"""How the library reports what it is doing: one small protocol, `Progress`, that long-running functions
(`training.train`, `runs.train_and_evaluate`, `inference.predict_files`, `evaluation.evaluate`, `compare.compare`)
take as `progress=` and call; the library itself never prints.

Every method of `Progress` does nothing (`NullProgress`, the default, is just that); an implementation overrides
what it shows. The CLI passes its rich one (`segcli.cli.render.RichProgress`: lines on the console, a transient
bar per task). `compare` relays the calls of its training children to the `progress` it was given.

The calls:
- `message(text)`: a line about what happens now ("run folder: ...", "evaluating best.keras ...", an epoch's figures).
- `note(text)`: a remark about the input or a setting, shown as "note: TEXT".
- `start(task, total)`, `advance(task, done, total=None, info="")`, `end(task)`: a counted piece of work named
  `task` (the bar's label, e.g. "epoch 3/30", "predict", "evaluate val"); `total` None while not known;
  `info` a short text beside it (the running loss, the file at hand). An error or Ctrl-C may leave a task
  without its `end`: an implementation that shows bars closes what is open when the caller is done with it.
"""

from __future__ import annotations


class Progress:
    """What the library reports while it works; every method does nothing here. Subclass and override."""

    def message(self, text: str) -> None:
        """A line about what is happening now."""

    def note(self, text: str) -> None:
        """A remark about the input or a setting (shown as "note: TEXT")."""

    def start(self, task: str, total: int | None = None) -> None:
        """A counted piece of work named `task` begins; `total` None: not known yet."""

    def advance(self, task: str, done: int, total: int | None = None, info: str = "") -> None:
        """`done` units of `task` are finished (of `total`, when given now); `info`: a short text beside it."""

    def end(self, task: str) -> None:
        """`task` is over (finished or abandoned)."""


class NullProgress(Progress):
    """Reports nothing: the default where no `progress` is given."""


__all__ = ["Progress", "NullProgress"]
