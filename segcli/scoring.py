"""Scores from a confusion matrix, and which pixels and classes a score counts: one home for the rules that
training's metrics (segcli.training.metrics) and `evaluate` (segcli.evaluation) both follow.

The rules:
- a pixel whose truth is the ignore label ("void"), or outside 0..K-1, is left out (not counted at all);
- with void trained as a class (K + 1 model outputs, void = class K), void is *predicted but not scored*:
  truth void is still left out, a prediction of class K on a real class counts as an error, and only the K
  real classes have an IoU and enter the mean;
- the mean IoU runs over the scored classes that occur (in truth or prediction).

Plain NumPy: importing this loads no TensorFlow.
"""

from __future__ import annotations

import numpy as np


def pct(value) -> str:
    """A fraction as a percentage with one decimal; "-" for None or NaN."""
    return "-" if value is None or value != value else f"{100 * value:.1f}%"


def scored_labels(data_classes: int, ignore_index: int, void_as_class: bool) -> tuple[int, int]:
    """(the truth label a score leaves out, the number of classes scored) for a model trained on a dataset of
    `data_classes` classes whose ignore label is `ignore_index`; with `void_as_class` void is class K, which
    the model predicts but which is not scored."""
    return (data_classes if void_as_class else ignore_index), data_classes


def confusion_counts(truth: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    """(K, K) int64 counts, rows = truth, columns = prediction, over pixels whose truth is a class
    (the ignore index and anything outside 0..K-1 left out)."""
    truth = np.asarray(truth).ravel()
    pred = np.asarray(pred).ravel()
    valid = (truth != ignore_index) & (truth >= 0) & (truth < num_classes)
    idx = truth[valid].astype(np.int64) * num_classes + pred[valid].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores_from_confusion(cm, scored_classes: int | None = None) -> dict:
    """Pixel accuracy (all counted pixels), mean IoU over the scored classes that occur (in truth or
    prediction), and per scored class its IoU and accuracy (None where it never occurs).

    scored_classes < K: the matrix's extra columns (a void class the model predicts) count as wrong
    predictions but are not classes of their own (see the module's rules)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    truth = cm.sum(axis=1)
    pred = cm.sum(axis=0)
    union = truth + pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(truth > 0, tp / truth, np.nan)
    if scored_classes is not None:
        iou, acc = iou[:scored_classes], acc[:scored_classes]
    return {
        "pixel_accuracy": float(tp.sum() / max(cm.sum(), 1.0)),
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
        "iou": [None if np.isnan(v) else float(v) for v in iou],
        "class_accuracy": [None if np.isnan(v) else float(v) for v in acc],
        "pixels": int(cm.sum()),
    }


__all__ = ["scored_labels", "confusion_counts", "scores_from_confusion"]
