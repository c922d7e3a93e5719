"""Pixel accuracy and IoU from one confusion matrix, built on Keras' MeanIoU (ignore_class)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="segcli")
class PixelAccuracy(keras.metrics.MeanIoU):
    """Share of non-ignored pixels classified right: trace / sum of MeanIoU's confusion matrix."""

    def __init__(self, num_classes, name="pixel_accuracy", **kwargs):
        kwargs.setdefault("sparse_y_pred", False)
        super().__init__(num_classes=num_classes, name=name, **kwargs)

    def result(self):
        cm = ops.cast(self.total_cm, "float32")
        return ops.sum(ops.diagonal(cm)) / ops.maximum(ops.sum(cm), 1.0)


def segmentation_metrics(num_classes: int, ignore_index: int | None, scored_classes: int | None = None):
    """[pixel accuracy, mean IoU] over the non-ignored pixels, both on argmax of the logits.

    scored_classes < num_classes: the mean IoU runs over the first scored_classes only (a void class the
    model is trained on, as class K, is predicted but not scored; predicting it on a real class is an error).
    """
    miou = (keras.metrics.IoU(num_classes, list(range(scored_classes)), ignore_class=ignore_index,
                              sparse_y_pred=False, name="miou")
            if scored_classes and scored_classes < num_classes else
            keras.metrics.MeanIoU(num_classes, ignore_class=ignore_index, sparse_y_pred=False, name="miou"))
    return [PixelAccuracy(num_classes, ignore_class=ignore_index, name="pixel_accuracy"), miou]


def scores_from_confusion(cm) -> dict:
    """Pixel accuracy, mean IoU over classes that occur (in truth or prediction), per-class IoU and accuracy."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    truth = cm.sum(axis=1)
    pred = cm.sum(axis=0)
    union = truth + pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(truth > 0, tp / truth, np.nan)
    return {
        "pixel_accuracy": float(tp.sum() / max(cm.sum(), 1.0)),
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
        "iou": [None if np.isnan(v) else float(v) for v in iou],
        "class_accuracy": [None if np.isnan(v) else float(v) for v in acc],
        "pixels": int(cm.sum()),
    }
