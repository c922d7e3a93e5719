"""Callbacks for what Keras does not log itself: images/s, per-class IoU, a time budget,
the best model by val mIoU (saved atomically with its classes) and a rich progress display."""

from __future__ import annotations

import math
import time

import keras
import numpy as np

from segcli.training.metrics import scores_from_confusion


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
    """After validation the mIoU metric holds the val confusion matrix: log IoU for every class."""

    def __init__(self, miou_metric: keras.metrics.MeanIoU, class_names):
        super().__init__()
        self.metric = miou_metric
        self.names = list(class_names)
        self.latest: dict | None = None

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or "val_miou" not in logs:
            return
        scores = scores_from_confusion(np.asarray(self.metric.total_cm))
        self.latest = scores
        for name, value in zip(self.names, scores["iou"]):
            logs[f"val_iou_{name}"] = float("nan") if value is None else value


class TimeBudget(keras.callbacks.Callback):
    """Stop before an epoch that would end past the budget (the last epoch's length predicts the next)."""

    def __init__(self, minutes: float):
        super().__init__()
        self.seconds = minutes * 60.0
        self.stopped_early = False

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()
        self._epoch_start = self._start

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        if self.seconds > 0 and now - self._start + (now - self._epoch_start) > self.seconds:
            self.stopped_early = epoch + 1 < self.params.get("epochs", 0)
            self.model.stop_training = True


class SaveBest(keras.callbacks.Callback):
    """Keep the model with the best monitored value; `save` writes atomically (temp file + rename)."""

    def __init__(self, save, monitor: str = "val_miou"):
        super().__init__()
        self.save = save
        self.monitor = monitor
        self.best = -math.inf
        self.best_epoch = None
        self.best_logs: dict = {}

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and math.isfinite(float(value)) and float(value) > self.best:
            self.best, self.best_epoch, self.best_logs = float(value), epoch + 1, dict(logs)
            self.save(self.model)


class RichProgress(keras.callbacks.Callback):
    """A bar per epoch with the running loss, then one line of train and val figures."""

    def __init__(self, console):
        super().__init__()
        self.console = console

    def on_epoch_begin(self, epoch, logs=None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._epoch = epoch
        self._progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{self.params.get('epochs')}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=self.console, transient=True)
        self._task = self._progress.add_task("train", total=self.params.get("steps"), info="")
        self._progress.start()

    def on_train_batch_end(self, batch, logs=None):
        info = f"loss {float(logs['loss']):.4f}" if logs and "loss" in logs else ""
        self._progress.update(self._task, completed=batch + 1, info=info)

    def on_epoch_end(self, epoch, logs=None):
        self._progress.stop()
        logs = logs or {}

        def fmt(key, pct=False):
            if key not in logs:
                return "-"
            value = float(logs[key])
            return f"{100 * value:.1f}%" if pct else f"{value:.4f}"

        line = (f"epoch {epoch + 1}/{self.params.get('epochs')}: loss {fmt('loss')} acc {fmt('pixel_accuracy', True)}"
                f" mIoU {fmt('miou', True)} | val loss {fmt('val_loss')} acc {fmt('val_pixel_accuracy', True)}"
                f" mIoU {fmt('val_miou', True)} | {float(logs.get('images_per_sec', float('nan'))):.1f} img/s")
        self.console.print(line, highlight=False)

    def on_train_end(self, logs=None):
        if getattr(self, "_progress", None) is not None:
            self._progress.stop()
