"""Pixel accuracy and IoU from one confusion matrix, built on Keras' IoU / MeanIoU (ignore_class), following
segcli.scoring's rules (what is ignored, void predicted but not scored); scores from a finished matrix are
segcli.scoring.scores_from_confusion.

Keras' own update makes masks, casts and a scatter per metric (what that cost a training step: docs/benchmarks.md,
"Measured figures"). Here one pass maps each pixel to its matrix cell (true * K + predicted) and one
segment sum of static length counts the cells; pixel accuracy reads the same matrix instead of building its
own. keras.ops only, so it runs on every Keras backend; XLA-compiled on its own on TensorFlow, whose CPU train
step runs without XLA (there the argmax alone took 312 ms uncompiled, 7 ms compiled). Measured for
8x352x480 pixels and 12 classes on the 2-core CPU: the segment sum took 16 ms on TensorFlow (XLA), 18 ms on
JAX (jit; jnp.bincount with a static length 14), 234 ms on torch (eager; torch.bincount 309); a one-hot
matmul took 137, 212 and 1295 ms.
"""

from __future__ import annotations

import functools

import keras
from keras import ops

from segcli.scoring import scored_labels
from segcli.training.losses import xla_on_tensorflow


def confusion_update(y_true, y_pred, num_classes: int, ignore_index: int | None, dtype="float32"):
    """(K, K) counts (rows truth, columns argmax of y_pred) over pixels whose truth is in 0..K-1 and not
    ignore_index. Ignored pixels go to a spare cell K * K that is dropped, so the count has a static length
    (what JAX needs inside jit)."""
    k = int(num_classes)
    # the first K channels: a training model with an auxiliary head has its scores after them (training.aux)
    pred = ops.reshape(ops.cast(ops.argmax(y_pred[..., :num_classes], axis=-1), "int32"), (-1,))
    true = ops.reshape(ops.cast(y_true, "int32"), (-1,))
    valid = ops.logical_and(true >= 0, true < k)
    if ignore_index is not None:
        valid = ops.logical_and(valid, ops.not_equal(true, ignore_index))
    cell = ops.where(valid, true * k + pred, k * k)
    counts = ops.segment_sum(ops.ones_like(cell, dtype=dtype), cell, num_segments=k * k + 1)
    return ops.reshape(counts[:k * k], (k, k))


@functools.lru_cache(maxsize=None)
def _compiled_update(num_classes: int, ignore_index: int | None, dtype: str):
    """confusion_update for one metric's settings, XLA-compiled on TensorFlow (xla_on_tensorflow)."""
    return xla_on_tensorflow(lambda y_true, y_pred: confusion_update(y_true, y_pred, num_classes, ignore_index, dtype))


class _FastConfusionUpdate:
    """update_state for Keras' IoU metrics (y_pred: logits or scores, argmax taken); sample weights unsupported."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError("segmentation metrics take no sample_weight")
        counts = _compiled_update(self.num_classes, self.ignore_class, self.dtype)(y_true, y_pred)
        self.total_cm.assign_add(counts)


@keras.saving.register_keras_serializable(package="segcli")
class ConfusionMeanIoU(_FastConfusionUpdate, keras.metrics.MeanIoU):
    """keras.metrics.MeanIoU on logits, with the one-pass update."""


@keras.saving.register_keras_serializable(package="segcli")
class ConfusionIoU(_FastConfusionUpdate, keras.metrics.IoU):
    """keras.metrics.IoU (a subset of classes averaged) on logits, with the one-pass update."""


class PixelAccuracy(keras.metrics.Metric):
    """Share of non-ignored pixels classified right: trace / sum of an IoU metric's confusion matrix.

    It keeps no state of its own: compile the IoU metric too (segmentation_metrics returns both).
    """

    def __init__(self, confusion: keras.metrics.MeanIoU, name="pixel_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self._source = [confusion]  # a list, so Keras does not track (and reset) the other metric's state twice

    def update_state(self, *args, **kwargs):
        return None

    def reset_state(self):
        return None

    def result(self):
        cm = ops.cast(self._source[0].total_cm, "float32")
        return ops.sum(ops.diagonal(cm)) / ops.maximum(ops.sum(cm), 1.0)


def segmentation_metrics(num_classes: int, ignore_index: int | None, scored_classes: int | None = None):
    """[pixel accuracy, mean IoU] over the non-ignored pixels, both on argmax of the logits.

    scored_classes < num_classes: the mean IoU runs over the first scored_classes only (a void class the
    model is trained on, as class K, is predicted but not scored; predicting it on a real class is an error).
    """
    if scored_classes and scored_classes < num_classes:
        miou = ConfusionIoU(num_classes, list(range(scored_classes)), ignore_class=ignore_index, name="miou")
    else:
        miou = ConfusionMeanIoU(num_classes, ignore_class=ignore_index, name="miou")
    return [PixelAccuracy(miou), miou]


def training_metrics(model_classes, void_as_class: bool):
    """segmentation_metrics for a model trained on `model_classes` (a ClassMap; with `void_as_class` its last
    class is void): the ignore label and scored classes from segcli.scoring's rules."""
    data_classes = model_classes.num_classes - 1 if void_as_class else model_classes.num_classes
    ignore, scored = scored_labels(data_classes, model_classes.ignore_index, void_as_class)
    return segmentation_metrics(model_classes.num_classes, ignore, scored)
