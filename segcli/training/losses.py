"""Segmentation losses that skip the ignore label: cross-entropy (optionally class-weighted),
focal, dice and cross-entropy + dice.

Plain unweighted cross-entropy is Keras' own SparseCategoricalCrossentropy(ignore_class=...);
the others need per-pixel weights or whole-batch sums, which no stock loss offers.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="segcli")
class SegmentationLoss(keras.losses.Loss):
    """kind: ce | focal | dice | ce+dice. Returns the mean over non-ignored pixels of the batch."""

    def __init__(self, num_classes: int, ignore_index: int | None = None, kind: str = "ce",
                 class_weights=None, gamma: float = 2.0, label_smoothing: float = 0.0,
                 name: str = "segmentation_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.kind = kind
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.gamma = float(gamma)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")
        labels = ops.cast(ops.reshape(y_true, ops.shape(logits)[:-1]), "int32")
        if self.ignore_index is None:
            valid = ops.ones_like(labels, dtype="bool")
        else:
            valid = ops.not_equal(labels, self.ignore_index)
        valid = ops.logical_and(valid, ops.logical_and(labels >= 0, labels < self.num_classes))
        safe = ops.where(valid, labels, 0)
        validf = ops.cast(valid, "float32")
        onehot = ops.one_hot(safe, self.num_classes, dtype="float32")
        total = 0.0
        if self.kind in ("ce", "focal", "ce+dice"):
            log_probs = ops.log_softmax(logits, axis=-1)
            target = onehot
            if self.label_smoothing:
                target = onehot * (1 - self.label_smoothing) + self.label_smoothing / self.num_classes
            ce = -ops.sum(target * log_probs, axis=-1)
            if self.kind == "focal":
                p_true = ops.exp(ops.sum(onehot * log_probs, axis=-1))
                ce = ops.power(1.0 - p_true, self.gamma) * ce
            weight = validf
            if self.class_weights is not None:
                weight = weight * ops.take(ops.convert_to_tensor(self.class_weights, "float32"), safe)
            total = ops.sum(ce * weight) / ops.maximum(ops.sum(weight), 1e-6)
        if self.kind in ("dice", "ce+dice"):
            probs = ops.softmax(logits, axis=-1) * validf[..., None]
            target = onehot * validf[..., None]
            axes = tuple(range(len(probs.shape) - 1))
            inter = ops.sum(probs * target, axis=axes)
            denom = ops.sum(probs, axis=axes) + ops.sum(target, axis=axes)
            present = ops.cast(ops.sum(target, axis=axes) > 0, "float32")
            dice = (2.0 * inter + 1.0) / (denom + 1.0)
            total = total + 1.0 - ops.sum(dice * present) / ops.maximum(ops.sum(present), 1.0)
        return total

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "ignore_index": self.ignore_index,
                "kind": self.kind, "class_weights": self.class_weights, "gamma": self.gamma,
                "label_smoothing": self.label_smoothing}


def median_frequency_weights(pixel_counts) -> list[float]:
    """SegNet's median-frequency balancing: weight_c = median(freq) / freq_c (absent classes get 0)."""
    counts = np.asarray(pixel_counts, dtype=np.float64)
    freq = counts / max(counts.sum(), 1.0)
    present = freq > 0
    median = np.median(freq[present]) if present.any() else 1.0
    return [float(median / f) if f > 0 else 0.0 for f in freq]


def make_loss(kind: str, num_classes: int, ignore_index: int | None, class_weights=None,
              label_smoothing: float = 0.0) -> keras.losses.Loss:
    if kind == "ce" and class_weights is None and not label_smoothing:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=ignore_index)
    return SegmentationLoss(num_classes, ignore_index, kind=kind, class_weights=class_weights,
                            label_smoothing=label_smoothing)
