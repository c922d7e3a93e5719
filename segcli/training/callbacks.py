"""Callbacks for what Keras does not log itself: images/s, per-class IoU, a time budget,
the best model by val mIoU (saved atomically with its classes), a crash-safe backup of each finished
epoch with the history, and progress reports (segcli.progress)."""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import keras
import numpy as np

from segcli.errors import SegcliError, first_line
from segcli.files import atomic_path, write_json, write_text
from segcli.modelfile import file_size_needed
from segcli.runfolder import STATE_NAME, history_csv, read_backup_state
from segcli.scoring import scores_from_confusion


class Throughput(keras.callbacks.Callback):
    """Logs images_per_sec and train_seconds per epoch: training steps only, validation not counted."""

    def __init__(self, global_batch_size: int):
        super().__init__()
        self.batch_size = global_batch_size

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._train_end = None

    def on_test_begin(self, logs=None):
        if self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        end = self._train_end or time.perf_counter()
        seconds = end - self._start
        steps = self.params.get("steps") or 0
        rate = steps * self.batch_size / seconds if seconds > 0 and steps else float("nan")
        if logs is not None:
            logs["images_per_sec"] = rate
            logs["train_seconds"] = seconds


class PerClassIoU(keras.callbacks.Callback):
    """After validation the mIoU metric holds the val confusion matrix: log IoU for every scored class (the
    dataset's; a void class the model is trained on is not scored, see segcli.scoring)."""

    def __init__(self, miou_metric: keras.metrics.MeanIoU, class_names):
        super().__init__()
        self.metric = miou_metric
        self.names = list(class_names)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or "val_miou" not in logs:
            return
        scores = scores_from_confusion(np.asarray(self.metric.total_cm), len(self.names))
        for name, value in zip(self.names, scores["iou"]):
            logs[f"val_iou_{name}"] = float("nan") if value is None else value


_clock = time.perf_counter  # TimeBudget's (the tests replace it)


class TimeBudget(keras.callbacks.Callback):
    """Stop before an epoch that would end past the budget (the last epoch's length predicts the next).

    One budget for the whole run, also when it is trained in several fits (an encoder frozen, then not):
    the clock starts at the first fit; `stopped` says the budget ended it (stop the later fits too).
    epochs: the run's planned epochs (default: the fit's). too_short: called once, after the second epoch (the
    first one traces and fills caches), with (epochs that fit, epochs planned, seconds per epoch) when the budget
    will stop the run before its planned epochs (its learning-rate schedule then never finishes: a slow machine
    is told early, not at the end)."""

    def __init__(self, minutes: float, epochs: int | None = None, agree=None, too_short=None):
        super().__init__()
        self.agree = agree or bool  # several processes: stop when any of them is out of time (all at one epoch)
        self.seconds = minutes * 60.0
        self.epochs = epochs
        self.too_short = too_short
        self.stopped_early = False
        self.stopped = False
        self._start = None
        self._epochs_seen = 0

    def on_train_begin(self, logs=None):
        if self._start is None:
            self._start = _clock()
        self._epoch_start = _clock()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = _clock()

    def on_epoch_end(self, epoch, logs=None):
        now = _clock()
        planned = self.epochs or self.params.get("epochs", 0)
        last = now - self._epoch_start
        self._epochs_seen += 1
        if self.agree(self.seconds > 0 and now - self._start + last > self.seconds):
            self.stopped_early = epoch + 1 < planned
            self.stopped = True
            self.model.stop_training = True
        elif self.too_short is not None and self.seconds > 0 and self._epochs_seen == 2:
            fit = epoch + 1 + int((self.seconds - (now - self._start)) // last)  # as the rule above will stop
            if fit < planned:
                self.too_short(fit, planned, last)


class SaveBest(keras.callbacks.Callback):
    """Keep the model with the best monitored value; `save` writes atomically (temp file + rename)."""

    def __init__(self, save, monitor: str = "val_miou"):
        super().__init__()
        self.save = save
        self.monitor = monitor
        self.best = -math.inf
        self.best_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and math.isfinite(float(value)) and float(value) > self.best:
            self.best, self.best_epoch = float(value), epoch + 1
            self.save(self.model)


class AveragedWeights(keras.callbacks.SwapEMAWeights):
    """With the optimizer's moving average of the weights ([train] ema_momentum, Keras' use_ema): validation runs
    on the average (Keras' SwapEMAWeights, which swaps it in for each evaluation and back), and `averaged()` puts
    it in the model for a save (best.keras, model.keras). Training steps, and the run's backup of weights and
    optimizer state (the average included), always see the trained weights: Keras' own write of the average
    into the model when a fit ends is switched off (training.optim), so a resumed run, or the next phase of a
    frozen encoder, continues from the trained weights."""

    @contextlib.contextmanager
    def averaged(self):
        self.on_test_begin()
        try:
            yield
        finally:
            self.on_test_end()


class RunBackup(keras.callbacks.Callback):
    """After each epoch: weights and optimizer state, the history and the best-so-far, written so that a kill
    at any moment leaves the last finished epoch whole (Keras' BackupAndRestore overwrites its files in place
    and deletes them when fit returns, before the run's final files exist).

    Each epoch's weights go to a new file (temp name, then rename); then ``state.json`` (also renamed into
    place) points to it; only then is the previous weights file deleted. history.csv is rewritten from the
    state, so it always lists exactly the epochs the backup holds. On resume, ``restore`` loads the weights and
    the optimizer before any fit, and ``epochs_done`` says where to start; a run the time budget stopped stays
    stopped. The caller deletes the folder once the run's final files are written."""

    def __init__(self, backup_dir: str | Path, history_path: str | Path, best=None, budget=None):
        super().__init__()
        self.backup_dir = Path(backup_dir)
        self.history_path = Path(history_path)
        self.best = best  # a SaveBest, whose best-so-far is saved and restored with the epoch
        self.budget = budget  # a TimeBudget: a run it stopped stays stopped when resumed
        self.history: list[dict] = []
        self.state = read_backup_state(self.backup_dir)
        if self.state is not None:
            self.history = [dict(row) for row in self.state["history"]]
            if best is not None and self.state.get("best_epoch") is not None:
                best.best, best.best_epoch = float(self.state["best"]), int(self.state["best_epoch"])
            if budget is not None and self.state.get("budget_stopped"):
                budget.stopped, budget.stopped_early = True, bool(self.state.get("stopped_early"))

    @property
    def epochs_done(self) -> int:
        return 0 if self.state is None else int(self.state["epoch"])

    def restore(self, model) -> None:
        """Resuming: load the backup's weights and optimizer state into ``model`` (compiled) and rewrite
        history.csv from the backup. Called before any fit, also when every epoch is already done (then no fit
        runs and the final files are written from these weights). A new run has nothing to restore."""
        if self.state is None:
            return
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        weights = self.backup_dir / self.state["weights"]
        try:
            model.load_weights(weights)
        except Exception as exc:  # h5py / Keras raise many types for a damaged file
            raise SegcliError(f"cannot restore the training backup ({first_line(exc, type(exc).__name__)}); "
                              "start the run again with --force", weights) from None
        write_text(self.history_path, history_csv(self.history))  # drops rows of an epoch that was lost

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch}
        for key, value in (logs or {}).items():
            row[key] = float(value) if np.ndim(value) == 0 else value
        self.history.append(row)
        name = f"epoch-{epoch + 1:04d}.weights.h5"
        needed = file_size_needed(self.model)  # checked before h5py writes: it crashes on a disk that fills
        with atomic_path(self.backup_dir / name, suffix=".weights.h5", needed=needed) as tmp:
            self.model.save_weights(tmp)
        best = self.best
        state = {"epoch": epoch + 1, "weights": name, "history": self.history,
                 "best": None if best is None or best.best_epoch is None else best.best,
                 "best_epoch": None if best is None else best.best_epoch,
                 "budget_stopped": bool(self.budget is not None and self.budget.stopped),
                 "stopped_early": bool(self.budget is not None and self.budget.stopped_early)}
        write_json(self.backup_dir / STATE_NAME, state)
        for old in self.backup_dir.glob("epoch-*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)
        self.state = state
        write_text(self.history_path, history_csv(self.history))


class CtrlC(keras.callbacks.Callback):
    """Ctrl-C during fit, raised as KeyboardInterrupt at the next batch's end, from Python.

    A KeyboardInterrupt that Python raises inside native code can be lost: on jax with several processes, the
    signal usually lands while Keras turns the step's loss into NumPy (jax's array conversion checks for
    signals and drops the error), and training went on to its last epoch. So, while fit runs (``with
    ctrl_c:``), SIGINT only sets a flag (and calls ``on_press``, e.g. to say so), which the next training
    batch end or epoch end, or the end of the ``with``, turns into KeyboardInterrupt; a second Ctrl-C raises at
    once. (No validation batch hook: any callback with one makes Keras turn every validation batch's logs into
    NumPy, a sync per batch; a Ctrl-C during validation waits for the epoch's end, or is pressed again.)
    Where SIGINT is ignored (nohup, a background job) or handled by someone else, or off the main thread,
    nothing changes."""

    def __init__(self, on_press=None):
        super().__init__()
        self.on_press = on_press
        self.pressed = 0
        self._saved = None

    def __enter__(self):
        import signal
        import threading

        self.pressed = 0
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._saved = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, exc_type, *exc):
        import signal

        try:
            if self._saved is not None:
                signal.signal(signal.SIGINT, self._saved)
        finally:
            self._saved = None
        if exc_type is None and self.pressed:  # pressed after the last check (e.g. during fit's own end)
            raise KeyboardInterrupt
        return False

    def _on_sigint(self, signum, frame):
        self.pressed += 1
        if self.pressed > 1:
            raise KeyboardInterrupt
        if self.on_press is not None:
            self.on_press()

    def _check(self, *args, **kwargs):
        if self.pressed:
            raise KeyboardInterrupt

    on_train_batch_end = on_epoch_end = _check


class ProgressCallback(keras.callbacks.Callback):
    """Reports training to a segcli.progress.Progress: a task per epoch ("epoch N/M", steps done, the running
    loss), then one line of train and val figures."""

    def __init__(self, progress, epochs: int | None = None):
        super().__init__()
        self.progress = progress
        self.epochs = epochs  # the run's planned epochs (default: the fit's)
        self._task = None

    def on_epoch_begin(self, epoch, logs=None):
        self._task = f"epoch {epoch + 1}/{self.epochs or self.params.get('epochs')}"
        self.progress.start(self._task, self.params.get("steps"))

    def on_train_batch_end(self, batch, logs=None):
        info = f"loss {float(logs['loss']):.4f}" if logs and "loss" in logs else ""
        self.progress.advance(self._task, batch + 1, info=info)

    def on_epoch_end(self, epoch, logs=None):
        self._end()
        self.progress.message(epoch_line(epoch, self.epochs or self.params.get("epochs"), logs or {}))

    def on_train_end(self, logs=None):
        self._end()

    def _end(self):
        if self._task is not None:
            self.progress.end(self._task)
            self._task = None


def epoch_line(epoch: int, epochs, logs: dict) -> str:
    """The line after an epoch: "epoch N/M: loss .. acc ..% mIoU ..% | val loss .. acc .. mIoU .. | N img/s"
    ("-" for a figure not logged)."""

    def fmt(key, pct=False):
        if key not in logs:
            return "-"
        value = float(logs[key])
        return f"{100 * value:.1f}%" if pct else f"{value:.4f}"

    return (f"epoch {epoch + 1}/{epochs}: loss {fmt('loss')} acc {fmt('pixel_accuracy', True)}"
            f" mIoU {fmt('miou', True)} | val loss {fmt('val_loss')} acc {fmt('val_pixel_accuracy', True)}"
            f" mIoU {fmt('val_miou', True)} | {float(logs.get('images_per_sec', float('nan'))):.1f} img/s")
