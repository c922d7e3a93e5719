"""Pixel accuracy and IoU from one confusion matrix, built on Keras' IoU / MeanIoU (ignore_class), following
segcli.scoring's rules (what is ignored, void predicted but not scored); scores from a finished matrix are
segcli.scoring.scores_from_confusion.

Keras' own update makes masks, casts and a scatter per metric (what that cost a training step: README,
"Measured figures"). Here the argmax and the pixel -> cell index are one XLA-fused pass and the matrix is a
bincount; pixel accuracy reads the same matrix instead of building its own.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from segcli.scoring import scored_labels


@tf.function(jit_compile=True, autograph=False)
def _cell_index(y_true, y_pred, num_classes, ignore_index):
    """Per pixel: true * K + predicted, or K * K (a spare bin) for an ignored or out-of-range truth."""
    pred = tf.argmax(y_pred, axis=-1, output_type=tf.int32)
    true = tf.reshape(tf.cast(y_true, tf.int32), tf.shape(pred))
    valid = (true >= 0) & (true < num_classes) & (true != ignore_index)
    return tf.reshape(tf.where(valid, true * num_classes + pred, num_classes * num_classes), [-1])


class _FastConfusionUpdate:
    """update_state for Keras' IoU metrics (y_pred: logits or scores, argmax taken); sample weights unsupported."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError("segmentation metrics take no sample_weight")
        k = self.num_classes
        ignore = -1 if self.ignore_class is None else self.ignore_class
        index = _cell_index(y_true, y_pred, tf.constant(k, tf.int32), tf.constant(ignore, tf.int32))
        counts = tf.raw_ops.DenseBincount(input=index, size=k * k + 1, weights=tf.zeros([0], self.dtype))
        return self.total_cm.assign_add(tf.reshape(counts[:k * k], (k, k)))


@keras.saving.register_keras_serializable(package="segcli")
class ConfusionMeanIoU(_FastConfusionUpdate, keras.metrics.MeanIoU):
    """keras.metrics.MeanIoU on logits, with the fused update."""


@keras.saving.register_keras_serializable(package="segcli")
class ConfusionIoU(_FastConfusionUpdate, keras.metrics.IoU):
    """keras.metrics.IoU (a subset of classes averaged) on logits, with the fused update."""


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
