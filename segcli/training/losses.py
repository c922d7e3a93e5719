"""Segmentation losses that skip the ignore label: cross-entropy (optionally class-weighted),
focal, dice and cross-entropy + dice.

The maths is keras.ops, so it runs on every Keras backend. On TensorFlow it runs as one XLA-compiled
function, forward and gradient: segcli runs TensorFlow's train step without XLA on a CPU, where Keras'
SparseCategoricalCrossentropy(ignore_class=...) or these ops uncompiled make a dozen separate passes over the
(B, H, W, classes) logits (what that cost a training step: docs/benchmarks.md). JAX compiles the whole
train step with XLA; torch runs it eagerly. The gradient is autodiff through log_softmax: a hand-written one
(softmax - target, ops.custom_gradient) was no faster under XLA (TensorFlow 248 ms against 231, JAX 264 against
228, for value and gradient over 8x352x480x12 logits on the 2-core CPU) and twice as slow on torch (1420 against
641). Values and gradients equal Keras' own (tests/test_training_parts.py, tests/test_backend_ops.py).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from segcli.backend import is_tensorflow
from segcli.choices import LOSSES as KINDS  # the loss kinds: the recipe's [train] loss choices
from segcli.choices import check_choice


def xla_on_tensorflow(fn):
    """fn XLA-compiled on its own on TensorFlow (segcli's CPU train step runs without XLA, where the loss's
    element-wise passes would each re-read the logits); as it is on JAX (Keras jits the whole step) and torch."""
    if not is_tensorflow():
        return fn
    import tensorflow as tf

    return tf.function(fn, jit_compile=True, autograph=False)


def _pixel_weights(labels, num_classes: int, ignore_index, class_weights):
    """(valid pixels, per-pixel weight): 0 on ignored or out-of-range labels, else 1 or the class weight."""
    valid = ops.logical_and(labels >= 0, labels < num_classes)
    if ignore_index is not None:
        valid = ops.logical_and(valid, ops.not_equal(labels, ignore_index))
    weight = ops.cast(valid, "float32")
    if class_weights is not None:
        table = ops.convert_to_tensor(np.asarray(class_weights, "float32"))
        weight = weight * ops.take(table, ops.where(valid, labels, 0), axis=0)
    return valid, weight


def _loss_math(labels, logits, *, num_classes: int, ignore_index, kind: str, class_weights, gamma: float,
               label_smoothing: float):
    """Mean over non-ignored pixels of the batch (labels outside 0..K-1 are ignored too)."""
    logits = ops.reshape(ops.cast(logits, "float32"), (-1, logits.shape[-1]))  # (pixels, K)
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    valid, weight = _pixel_weights(labels, num_classes, ignore_index, class_weights)
    is_true = ops.equal(ops.arange(num_classes, dtype="int32")[None, :], labels[:, None])  # a mask, no one-hot
    total = 0.0
    if kind in ("ce", "focal", "ce+dice"):
        log_probs = ops.log_softmax(logits, axis=-1)
        true_log_prob = ops.sum(ops.where(is_true, log_probs, 0.0), axis=-1)
        ce = -true_log_prob
        if label_smoothing:  # target (1 - e) onehot + e / K
            ce = (1.0 - label_smoothing) * ce - label_smoothing * ops.mean(log_probs, axis=-1)
        if kind == "focal":  # (1 - p)^gamma, kept off 0: its gradient there is 0 * inf for gamma < 1
            ce = ops.power(ops.maximum(1.0 - ops.exp(true_log_prob), 1e-12), gamma) * ce
        total += ops.sum(ce * weight) / ops.maximum(ops.sum(weight), 1e-6)
    if kind in ("dice", "ce+dice"):
        validf = ops.cast(valid, "float32")[:, None]
        probs = ops.softmax(logits, axis=-1) * validf
        target = ops.cast(is_true, "float32") * validf
        inter = ops.sum(probs * target, axis=0)
        target_sum = ops.sum(target, axis=0)
        dice = (2.0 * inter + 1.0) / (ops.sum(probs, axis=0) + target_sum + 1.0)
        present = ops.cast(target_sum > 0, "float32")
        total += 1.0 - ops.sum(dice * present) / ops.maximum(ops.sum(present), 1.0)
    return total


def _replicas() -> int:
    """tf.distribute's replica count (1 off TensorFlow: Keras' JAX trainer takes the loss over the global batch,
    sharded, so a mean over it is already the global mean; torch runs one process)."""
    if not is_tensorflow():
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


@keras.saving.register_keras_serializable(package="segcli")
class SegmentationLoss(keras.losses.Loss):
    """kind: ce | focal | dice | ce+dice. Returns the mean over non-ignored pixels of the batch."""

    def __init__(self, num_classes: int, ignore_index: int | None = None, kind: str = "ce",
                 class_weights=None, gamma: float = 2.0, label_smoothing: float = 0.0,
                 name: str = "segmentation_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        try:
            check_choice(kind, KINDS)
        except ValueError as exc:
            raise ValueError(f"loss kind: {exc}") from None
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.kind = kind
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.gamma = float(gamma)
        self.label_smoothing = float(label_smoothing)
        settings = dict(num_classes=self.num_classes, ignore_index=ignore_index, kind=kind,
                        class_weights=self.class_weights, gamma=self.gamma, label_smoothing=self.label_smoothing)
        self._math = xla_on_tensorflow(lambda labels, logits: _loss_math(labels, logits, **settings))

    def call(self, y_true, y_pred):
        # Keras divides the losses it reduces itself by tf.distribute's replica count (gradients are summed
        # over replicas) but passes a scalar through untouched: do the same division here.
        loss = self._math(y_true, y_pred)
        replicas = _replicas()
        return loss / replicas if replicas > 1 else loss

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "ignore_index": self.ignore_index,
                "kind": self.kind, "class_weights": self.class_weights, "gamma": self.gamma,
                "label_smoothing": self.label_smoothing}


CLASS_WEIGHTINGS = {"median-frequency": 1.0, "sqrt-median-frequency": 0.5}  # name -> power of the weights


def median_frequency_weights(pixel_counts, power: float = 1.0) -> list[float]:
    """SegNet's median-frequency balancing: weight_c = (median(freq) / freq_c) ** power (absent classes get 0).
    power 0.5 (``sqrt-median-frequency``) is the softer balance: on CamVid the full one (rare classes weighted
    up to 14x) cost 8 points of pixel accuracy (Building fell from 80% to 51% IoU), its square root 3."""
    counts = np.asarray(pixel_counts, dtype=np.float64)
    freq = counts / max(counts.sum(), 1.0)
    present = freq > 0
    median = np.median(freq[present]) if present.any() else 1.0
    return [float((median / f) ** power) if f > 0 else 0.0 for f in freq]


def make_loss(kind: str, num_classes: int, ignore_index: int | None, class_weights=None,
              label_smoothing: float = 0.0) -> keras.losses.Loss:
    return SegmentationLoss(num_classes, ignore_index, kind=kind, class_weights=class_weights,
                            label_smoothing=label_smoothing)
