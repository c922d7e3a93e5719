"""Segmentation losses that skip the ignore label: cross-entropy (optionally class-weighted),
focal, dice and cross-entropy + dice.

The arithmetic runs as one XLA-compiled function, forward and gradient, and cross-entropy computes its
gradient in the forward pass: Keras' SparseCategoricalCrossentropy(ignore_class=...) makes a dozen
separate passes over the (B, H, W, classes) logits, this three (what that cost a training step: README,
"Measured figures"). Values and gradients equal Keras' own (tests/test_training_parts.py).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

KINDS = ("ce", "focal", "dice", "ce+dice")


def _pixel_weights(labels, num_classes: int, ignore_index, class_weights):
    """(valid pixels, per-pixel weight): 0 on ignored or out-of-range labels, else 1 or the class weight."""
    valid = (labels >= 0) & (labels < num_classes)
    if ignore_index is not None:
        valid &= labels != ignore_index
    weight = tf.cast(valid, tf.float32)
    if class_weights is not None:
        weight *= tf.gather(tf.constant(class_weights, tf.float32), tf.where(valid, labels, 0))
    return valid, weight


def _cross_entropy(labels, logits, weight, label_smoothing: float):
    """Weighted mean cross-entropy with its gradient computed in the same pass (softmax - target, scaled),
    as TensorFlow's fused SparseSoftmaxCrossEntropyWithLogits does, instead of autodiff re-reading the logits."""
    num_classes = logits.shape[-1]

    @tf.custom_gradient
    def fused(logits):
        shifted = logits - tf.reduce_max(logits, axis=-1, keepdims=True)
        exp = tf.exp(shifted)
        sum_exp = tf.reduce_sum(exp, axis=-1, keepdims=True)
        is_true = tf.equal(tf.range(num_classes), labels[..., None])
        target = tf.cast(is_true, tf.float32) * (1.0 - label_smoothing) + label_smoothing / num_classes
        ce = tf.math.log(sum_exp[..., 0]) - tf.reduce_sum(target * shifted, axis=-1)
        scale = weight / tf.maximum(tf.reduce_sum(weight), 1e-6)
        loss = tf.reduce_sum(ce * scale)

        def gradient(upstream):
            return upstream * (exp / sum_exp - target) * scale[..., None]

        return loss, gradient

    return fused(logits)


def _loss_math(labels, logits, *, num_classes: int, ignore_index, kind: str, class_weights, gamma: float,
               label_smoothing: float):
    """Mean over non-ignored pixels of the batch (labels outside 0..K-1 are ignored too)."""
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(tf.reshape(labels, tf.shape(logits)[:-1]), tf.int32)
    valid, weight = _pixel_weights(labels, num_classes, ignore_index, class_weights)
    if kind == "ce":
        return _cross_entropy(labels, logits, weight, label_smoothing)
    is_true = tf.equal(tf.range(num_classes), labels[..., None])  # one-hot as a mask, never materialised
    total = tf.constant(0.0)
    if kind in ("focal", "ce+dice"):
        shift = tf.reduce_max(logits, axis=-1, keepdims=True)
        log_sum = tf.math.log(tf.reduce_sum(tf.exp(logits - shift), axis=-1))
        true_logit = tf.reduce_sum(tf.where(is_true, logits - shift, 0.0), axis=-1)
        ce = log_sum - true_logit
        if label_smoothing:
            mean_logit = tf.reduce_mean(logits - shift, axis=-1)
            ce = (1.0 - label_smoothing) * ce + label_smoothing * (log_sum - mean_logit)
        if kind == "focal":
            p_true = tf.exp(true_logit - log_sum)
            ce = tf.pow(1.0 - p_true, gamma) * ce
        total += tf.reduce_sum(ce * weight) / tf.maximum(tf.reduce_sum(weight), 1e-6)
    if kind in ("dice", "ce+dice"):
        validf = tf.cast(valid, tf.float32)[..., None]
        probs = tf.nn.softmax(logits, axis=-1) * validf
        target = tf.cast(is_true, tf.float32) * validf
        axes = list(range(len(probs.shape) - 1))
        inter = tf.reduce_sum(probs * target, axis=axes)
        target_sum = tf.reduce_sum(target, axis=axes)
        dice = (2.0 * inter + 1.0) / (tf.reduce_sum(probs, axis=axes) + target_sum + 1.0)
        present = tf.cast(target_sum > 0, tf.float32)
        total += 1.0 - tf.reduce_sum(dice * present) / tf.maximum(tf.reduce_sum(present), 1.0)
    return total


@keras.saving.register_keras_serializable(package="segcli")
class SegmentationLoss(keras.losses.Loss):
    """kind: ce | focal | dice | ce+dice. Returns the mean over non-ignored pixels of the batch."""

    def __init__(self, num_classes: int, ignore_index: int | None = None, kind: str = "ce",
                 class_weights=None, gamma: float = 2.0, label_smoothing: float = 0.0,
                 name: str = "segmentation_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if kind not in KINDS:
            raise ValueError(f"unknown loss {kind!r}; valid: {', '.join(KINDS)}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.kind = kind
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.gamma = float(gamma)
        self.label_smoothing = float(label_smoothing)
        settings = dict(num_classes=self.num_classes, ignore_index=ignore_index, kind=kind,
                        class_weights=self.class_weights, gamma=self.gamma, label_smoothing=self.label_smoothing)
        self._fused = tf.function(lambda labels, logits: _loss_math(labels, logits, **settings), jit_compile=True,
                                  autograph=False)

    def call(self, y_true, y_pred):
        # Keras divides the losses it reduces itself by the replica count (gradients are summed over
        # replicas) but passes a scalar through untouched: do the same division here.
        return self._fused(y_true, y_pred) / tf.distribute.get_strategy().num_replicas_in_sync

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
    return SegmentationLoss(num_classes, ignore_index, kind=kind, class_weights=class_weights,
                            label_smoothing=label_smoothing)
