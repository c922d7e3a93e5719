"""Segmentation losses that skip the ignore label: cross-entropy (optionally class-weighted),
focal, dice, cross-entropy + dice, and OHEM cross-entropy (online hard example mining: the mean over the
pixels the model finds hard, as BiSeNet, PIDNet and PP-LiteSeg train).

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

import math

import keras
import numpy as np
from keras import ops

from segcli.backend import is_tensorflow
from segcli.choices import LOSSES as KINDS  # the loss kinds: the recipe's [train] loss choices
from segcli.choices import check_choice
from segcli.recipe.spec import TrainSpec


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


OHEM_THRESHOLD = TrainSpec.ohem_threshold  # a pixel is hard while its true class's probability is below this
OHEM_MIN_KEPT = TrainSpec.ohem_min_kept  # at least this share of the batch's pixels is kept (the hardest)


def _hard_pixels(true_prob, valid, threshold: float, min_kept: float):
    """OHEM's pixels: valid ones whose true-class probability is below `threshold`; where fewer than
    `min_kept` x the batch's pixels are, the hardest min_kept share of them instead (BiSeNet's rule: a
    threshold, with a floor on the count). The count is found with top_k only when the threshold keeps too
    few (ops.cond: late in training, when most pixels are easy), so the usual step pays one comparison."""
    valid_prob = ops.where(valid, true_prob, 2.0)  # ignored pixels are never hard
    hard = valid_prob < threshold
    pixels = valid_prob.shape[0]  # the batch's pixel count: static in training (whole batches of one crop)
    if pixels is None:  # validation's batches of whole images: known when XLA compiles them
        kept = ops.maximum(ops.cast(ops.ceil(min_kept * ops.cast(ops.shape(valid_prob)[0], "float32")), "int32"), 1)
    else:
        kept = max(1, int(math.ceil(min_kept * pixels)))

    def kth_hardest():  # the kept-th smallest probability
        return ops.maximum(-ops.min(ops.top_k(-valid_prob, kept, sorted=False)[0]), threshold)

    enough = ops.sum(ops.cast(hard, "int32")) >= kept
    cut = ops.cond(enough, lambda: ops.convert_to_tensor(threshold, "float32"), kth_hardest)
    return ops.logical_and(valid, valid_prob <= cut)


def _loss_math(labels, logits, *, num_classes: int, ignore_index, kind: str, class_weights, gamma: float,
               label_smoothing: float, ohem_threshold: float = OHEM_THRESHOLD, ohem_min_kept: float = OHEM_MIN_KEPT):
    """Mean over non-ignored pixels of the batch (labels outside 0..K-1 are ignored too); ohem: over the
    hard ones (_hard_pixels)."""
    logits = ops.reshape(ops.cast(logits, "float32"), (-1, logits.shape[-1]))  # (pixels, K)
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    valid, weight = _pixel_weights(labels, num_classes, ignore_index, class_weights)
    is_true = ops.equal(ops.arange(num_classes, dtype="int32")[None, :], labels[:, None])  # a mask, no one-hot
    total = 0.0
    if kind in ("ce", "focal", "ce+dice", "ohem"):
        log_probs = ops.log_softmax(logits, axis=-1)
        true_log_prob = ops.sum(ops.where(is_true, log_probs, 0.0), axis=-1)
        ce = -true_log_prob
        if label_smoothing:  # target (1 - e) onehot + e / K
            ce = (1.0 - label_smoothing) * ce - label_smoothing * ops.mean(log_probs, axis=-1)
        if kind == "focal":  # (1 - p)^gamma, kept off 0: its gradient there is 0 * inf for gamma < 1
            ce = ops.power(ops.maximum(1.0 - ops.exp(true_log_prob), 1e-12), gamma) * ce
        if kind == "ohem":  # which pixels are hard is not differentiated through
            hard = _hard_pixels(ops.stop_gradient(ops.exp(true_log_prob)), valid, ohem_threshold, ohem_min_kept)
            weight = weight * ops.cast(hard, "float32")
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
    """kind: ce | focal | dice | ce+dice | ohem. Returns the mean over non-ignored pixels of the batch (ohem:
    over its hard pixels: true-class probability below ohem_threshold, at least ohem_min_kept of the batch).
    aux_weight > 0: the scores are 2K channels, the model's then an auxiliary head's, and the loss is the
    first's plus aux_weight times the second's."""

    def __init__(self, num_classes: int, ignore_index: int | None = None, kind: str = "ce",
                 class_weights=None, gamma: float = 2.0, label_smoothing: float = 0.0,
                 ohem_threshold: float = OHEM_THRESHOLD, ohem_min_kept: float = OHEM_MIN_KEPT,
                 aux_weight: float = 0.0, name: str = "segmentation_loss", **kwargs):
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
        self.ohem_threshold, self.ohem_min_kept = float(ohem_threshold), float(ohem_min_kept)
        self.aux_weight = float(aux_weight)
        settings = dict(num_classes=self.num_classes, ignore_index=ignore_index, kind=kind,
                        class_weights=self.class_weights, gamma=self.gamma, label_smoothing=self.label_smoothing,
                        ohem_threshold=self.ohem_threshold, ohem_min_kept=self.ohem_min_kept)
        self._math = xla_on_tensorflow(lambda labels, logits: _loss_math(labels, logits, **settings))

    def call(self, y_true, y_pred):
        # Keras divides the losses it reduces itself by tf.distribute's replica count (gradients are summed
        # over replicas) but passes a scalar through untouched: do the same division here.
        k = self.num_classes
        if self.aux_weight:  # (B, H, W, 2K): the model's scores, then an auxiliary head's (segcli.training.aux)
            loss = self._math(y_true, y_pred[..., :k]) + self.aux_weight * self._math(y_true, y_pred[..., k:])
        else:
            loss = self._math(y_true, y_pred)
        replicas = _replicas()
        return loss / replicas if replicas > 1 else loss

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "ignore_index": self.ignore_index,
                "kind": self.kind, "class_weights": self.class_weights, "gamma": self.gamma,
                "label_smoothing": self.label_smoothing, "ohem_threshold": self.ohem_threshold,
                "ohem_min_kept": self.ohem_min_kept, "aux_weight": self.aux_weight}


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
              label_smoothing: float = 0.0, ohem_threshold: float = OHEM_THRESHOLD,
              ohem_min_kept: float = OHEM_MIN_KEPT, aux_weight: float = 0.0) -> keras.losses.Loss:
    return SegmentationLoss(num_classes, ignore_index, kind=kind, class_weights=class_weights,
                            label_smoothing=label_smoothing, ohem_threshold=ohem_threshold,
                            ohem_min_kept=ohem_min_kept, aux_weight=aux_weight)
