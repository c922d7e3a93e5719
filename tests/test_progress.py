"""The progress protocol (segcli.progress): what training reports through it, compare's relay from its
training child, and the CLI's rich implementation."""

import io

from segcli.progress import Progress


class Recorder(Progress):
    def __init__(self):
        self.calls = []

    def message(self, text):
        self.calls.append(("message", text))

    def note(self, text):
        self.calls.append(("note", text))

    def start(self, task, total=None):
        self.calls.append(("start", task, total))

    def advance(self, task, done, total=None, info=""):
        self.calls.append(("advance", task, done, total, info))

    def end(self, task):
        self.calls.append(("end", task))


def test_training_reports_a_task_per_epoch_then_its_line():
    from segcli.training.callbacks import ProgressCallback

    seen = Recorder()
    callback = ProgressCallback(seen)
    callback.set_params({"epochs": 2, "steps": 3})
    callback.on_epoch_begin(0)
    callback.on_train_batch_end(0, {"loss": 1.5})
    callback.on_epoch_end(0, {"loss": 1.25, "pixel_accuracy": 0.5, "miou": 0.25, "images_per_sec": 12.0})
    callback.on_epoch_begin(1)
    callback.on_train_end()  # stopped mid-epoch (a time budget): the open task still ends
    assert seen.calls == [
        ("start", "epoch 1/2", 3), ("advance", "epoch 1/2", 1, None, "loss 1.5000"), ("end", "epoch 1/2"),
        ("message", "epoch 1/2: loss 1.2500 acc 50.0% mIoU 25.0% | val loss - acc - mIoU - | 12.0 img/s"),
        ("start", "epoch 2/2", 3), ("end", "epoch 2/2")]


def test_compare_relays_the_childs_reports_to_its_caller():
    from segcli.compare import _Relay, _replay

    pipe = io.StringIO()
    child = _Relay(pipe)
    child.note("a note")
    child.start("epoch 1/1", 3)
    child.advance("epoch 1/1", 2, info="loss 0.5000")
    child.end("epoch 1/1")
    child.message("run folder: x")
    parent = Recorder()
    for line in (pipe.getvalue() + "not a report\n").splitlines(keepends=True):
        _replay(line, parent)
    assert parent.calls == [("note", "a note"), ("start", "epoch 1/1", 3),
                            ("advance", "epoch 1/1", 2, None, "loss 0.5000"), ("end", "epoch 1/1"),
                            ("message", "run folder: x")]


def test_rich_progress_prints_lines_as_given():
    from rich.console import Console

    from segcli.cli.render import RichProgress

    out = io.StringIO()
    console = Console(file=out, width=200)
    with RichProgress(console) as progress:
        progress.note("[b]x[/b] kept as written")
        progress.message("epoch 1/2: loss 1.0000 | [not markup]")
        progress.start("predict", 2)
        progress.advance("predict", 1, info="[a].png")
        progress.end("predict")
    with RichProgress(console, quiet=True) as progress:
        progress.message("not shown")
    lines = [line for line in out.getvalue().splitlines() if line]
    assert lines == ["note: [b]x[/b] kept as written", "epoch 1/2: loss 1.0000 | [not markup]"]
