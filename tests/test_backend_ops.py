"""segcli's training loss and metrics on every Keras backend (issue 14): one child process per backend
(KERAS_BACKEND=tensorflow | jax | torch; TensorFlow hidden on jax and torch by tests/no_tensorflow.py) computes
the loss of each kind (class weights, label smoothing, ignore label, labels out of range), the cross-entropy
gradient, Keras' own sparse cross-entropy, and the metrics (mIoU, pixel accuracy, an IoU subset; directly and
through a compiled model's evaluate) on fixed small arrays and prints JSON; the test compares it with NumPy.

This file is also the child's script: `[python tests/no_tensorflow.py] tests/test_backend_ops.py ARRAYS.npz`.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import child_result, run_on_backend

from segcli.choices import LOSSES

ROOT = Path(__file__).resolve().parents[1]
K = 4  # classes
IGNORE = 255
KINDS = LOSSES  # every loss the recipe offers
WEIGHTS = [1.0, 2.0, 0.5, 1.5]
# name -> (class weights, label smoothing, ignore label)
SETTINGS = {"plain": (None, 0.0, IGNORE), "weighted": (WEIGHTS, 0.0, IGNORE), "smoothed": (None, 0.1, IGNORE),
            "weighted+smoothed": (WEIGHTS, 0.1, IGNORE), "no-ignore-label": (None, 0.0, None),
            "ignore-class-2": (None, 0.0, 2)}


def _arrays():
    """Labels with the ignore label and labels out of range (-1, K, K + 3), and logits, for two batches."""
    rng = np.random.default_rng(14)
    truth = rng.integers(0, K, (2, 2, 5, 6)).astype("int32")
    truth[0, 0, 0] = IGNORE
    truth[0, 1, :, 0] = -1
    truth[1, 0, 1, :3] = K
    truth[1, 1, 2, 2:] = K + 3
    logits = (rng.normal(size=(2, 2, 5, 6, K)) * 3).astype("float32")
    logits[1, 0, 0, 0] = [5.0, 5.0, -1.0, 0.0]  # a tie: argmax takes the first
    return truth, logits


# ----------------------------------------------------------------------------------------------- the child
def _child(npz: str) -> None:
    """Runs in the child process (through tests/no_tensorflow.py on jax and torch): everything through segcli on
    the backend KERAS_BACKEND names."""
    import keras
    from keras import ops

    from segcli.training.losses import SegmentationLoss, make_loss
    from segcli.training.metrics import ConfusionIoU, ConfusionMeanIoU, segmentation_metrics

    data = np.load(npz)
    truth, logits = data["truth"], data["logits"]
    backend = keras.backend.backend()
    out = {"backend": backend, "losses": {}, "gradients": {}}

    for setting, (weights, smoothing, ignore) in SETTINGS.items():
        for kind in KINDS:
            loss = make_loss(kind, K, ignore, class_weights=weights, label_smoothing=smoothing)
            out["losses"][f"{kind} {setting}"] = float(loss(truth[0], logits[0]))

    def gradient(loss, x):
        if backend == "jax":
            import jax

            return np.asarray(jax.grad(lambda v: loss(truth[0], v))(x))
        if backend == "torch":
            import torch

            v = torch.tensor(x, requires_grad=True)
            loss(truth[0], v).backward()
            return v.grad.numpy()
        import tensorflow as tf

        v = tf.Variable(x)
        with tf.GradientTape() as tape:
            value = loss(truth[0], v)
        return tape.gradient(value, v).numpy()

    for setting in ("plain", "weighted+smoothed"):
        weights, smoothing, ignore = SETTINGS[setting]
        loss = make_loss("ce", K, ignore, class_weights=weights, label_smoothing=smoothing)
        out["gradients"][setting] = gradient(loss, logits[0]).tolist()
    # OHEM where the threshold keeps too few pixels: the hardest half (top_k, in ops.cond)
    out["losses"]["ohem top-k"] = float(SegmentationLoss(K, IGNORE, kind="ohem", ohem_threshold=0.05,
                                                         ohem_min_kept=0.5)(truth[0], logits[0]))
    # focal with gamma 0 is cross-entropy; gamma < 1 has an infinite slope at p = 1 (ignored pixels' p)
    for gamma in (0.0, 0.5):
        loss = SegmentationLoss(K, IGNORE, kind="focal", gamma=gamma, class_weights=WEIGHTS, label_smoothing=0.1)
        out["gradients"][f"focal gamma {gamma}"] = gradient(loss, logits[0]).tolist()

    # Keras' own cross-entropy knows only the ignore label: compare on labels in range or ignored
    in_range = np.where((truth[0] >= 0) & (truth[0] < K), truth[0], IGNORE)
    keras_ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE)
    out["keras_ce"] = [float(keras_ce(in_range, logits[0])), float(make_loss("ce", K, IGNORE)(in_range, logits[0]))]

    # metrics: two batches accumulate; ConfusionIoU scores the first 3 classes with class 3 (void) ignored
    metrics = {"all": segmentation_metrics(K, IGNORE), "subset": segmentation_metrics(K, 3, scored_classes=3)}
    for batch in range(2):
        for pair in metrics.values():
            for metric in pair:
                metric.update_state(truth[batch], logits[batch])
    out["metrics"] = {name: {"pixel_accuracy": float(acc.result()), "miou": float(miou.result()),
                             "total_cm": np.asarray(ops.convert_to_numpy(miou.total_cm)).tolist()}
                      for name, (acc, miou) in metrics.items()}
    metrics["all"][1].reset_state()
    out["reset_cm_sum"] = float(np.asarray(ops.convert_to_numpy(metrics["all"][1].total_cm)).sum())

    # through Keras' compiled test step (jit on JAX): a model that returns its input, evaluated on both batches
    model = keras.Sequential([keras.Input((5, 6, K)), keras.layers.Identity()])
    model.compile(loss=make_loss("ce", K, IGNORE), metrics=segmentation_metrics(K, IGNORE),
                  jit_compile=backend == "jax")
    out["evaluate"] = model.evaluate(logits.reshape(-1, 5, 6, K), truth.reshape(-1, 5, 6), batch_size=2,
                                     return_dict=True, verbose=0)

    # the registered names that .keras files and compile configs hold
    out["registered"] = [keras.saving.get_registered_name(c) for c in (SegmentationLoss, ConfusionMeanIoU,
                                                                         ConfusionIoU)]
    copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(
        make_loss("focal", K, IGNORE, class_weights=WEIGHTS, label_smoothing=0.1)))
    out["copy_loss"] = [type(copy).__name__, float(copy(truth[0], logits[0]))]
    iou = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metrics["subset"][1]))
    out["copy_iou"] = [type(iou).__name__, list(iou.target_class_ids), iou.ignore_class]
    out["tensorflow_modules"] = sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow"
                                       and sys.modules[m] is not None)
    print("RESULT " + json.dumps(out))


# ------------------------------------------------------------------------------------------ NumPy reference
def _np_loss(truth, logits, kind, weights, smoothing, ignore, gamma=2.0, threshold=0.7, min_kept=1 / 16):
    t = truth.reshape(-1)
    x = logits.reshape(-1, K).astype(np.float64)
    valid = (t >= 0) & (t < K) & ((t != ignore) if ignore is not None else True)
    safe = np.where(valid, t, 0)
    w = valid * (np.asarray(weights)[safe] if weights else 1.0)
    log_p = x - x.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    onehot = np.eye(K)[safe]
    total = 0.0
    if kind in ("ce", "focal", "ce+dice", "ohem"):
        ce = -((onehot * (1 - smoothing) + smoothing / K) * log_p).sum(1)
        if kind == "focal":
            ce *= (1 - np.exp(log_p[np.arange(len(t)), safe])) ** gamma
        if kind == "ohem":  # hard: true-class probability < threshold; else at least the min_kept share hardest
            p_true = np.where(valid, np.exp(log_p[np.arange(len(t)), safe]), 2.0)
            kept = max(1, int(np.ceil(min_kept * len(t))))
            cut = threshold if (p_true < threshold).sum() >= kept else max(np.sort(p_true)[kept - 1], threshold)
            w = w * (p_true <= cut)
        total += (ce * w).sum() / max(w.sum(), 1e-6)
    if kind in ("dice", "ce+dice"):  # unweighted, over the classes present in the valid truth
        p, target = np.exp(log_p) * valid[:, None], onehot * valid[:, None]
        dice = (2 * (p * target).sum(0) + 1) / (p.sum(0) + target.sum(0) + 1)
        present = target.sum(0) > 0
        total += 1 - dice[present].sum() / max(present.sum(), 1)
    return total


def _np_ce_gradient(truth, logits, weights, smoothing, ignore):
    """d(weighted mean CE)/d logits = (softmax - target) * w / sum(w), 0 on ignored pixels."""
    t = truth.reshape(-1)
    x = logits.reshape(-1, K).astype(np.float64)
    valid = (t >= 0) & (t < K) & (t != ignore)
    safe = np.where(valid, t, 0)
    w = valid * (np.asarray(weights)[safe] if weights else 1.0)
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    target = np.eye(K)[safe] * (1 - smoothing) + smoothing / K
    return ((p - target) * (w / w.sum())[:, None]).reshape(logits.shape)


def _np_confusion(truth, logits, ignore):
    t, pred = truth.reshape(-1), logits.argmax(-1).reshape(-1)
    valid = (t >= 0) & (t < K) & (t != ignore)
    cm = np.zeros((K, K))
    np.add.at(cm, (t[valid], pred[valid]), 1)
    return cm


def _np_miou(cm, classes):
    tp, union = np.diag(cm), cm.sum(0) + cm.sum(1) - np.diag(cm)
    iou = [tp[c] / union[c] for c in classes if union[c] > 0]
    return float(np.mean(iou))


# --------------------------------------------------------------------------------------------------- tests
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_loss_and_metrics_on_each_backend(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    truth, logits = _arrays()
    npz = tmp_path / "arrays.npz"
    np.savez(npz, truth=truth, logits=logits)
    # as if TensorFlow were not installed, on jax and torch
    out = child_result(run_on_backend(backend, __file__, npz, hide_tensorflow=backend != "tensorflow", timeout=300),
                       "RESULT ")
    assert out["backend"] == backend
    if backend != "tensorflow":
        assert out["tensorflow_modules"] == []

    for setting, (weights, smoothing, ignore) in SETTINGS.items():
        for kind in KINDS:
            expected = _np_loss(truth[0], logits[0], kind, weights, smoothing, ignore)
            assert out["losses"][f"{kind} {setting}"] == pytest.approx(expected, rel=1e-5), (kind, setting)
    # the settings matter (a test that would pass with them dropped proves nothing); labels out of range are
    # left out with or without an ignore label
    for setting in ("weighted", "smoothed", "ignore-class-2"):
        assert out["losses"][f"ce {setting}"] != pytest.approx(out["losses"]["ce plain"]), setting
    assert out["losses"]["ce no-ignore-label"] == pytest.approx(out["losses"]["ce plain"])
    # OHEM keeps fewer pixels than cross-entropy (its mean is over the hard ones), and its top-k branch
    assert out["losses"]["ohem plain"] != pytest.approx(out["losses"]["ce plain"])
    assert out["losses"]["ohem top-k"] == pytest.approx(
        _np_loss(truth[0], logits[0], "ohem", None, 0.0, IGNORE, threshold=0.05, min_kept=0.5), rel=1e-5)

    focal = np.asarray(out["gradients"].pop("focal gamma 0.5"))
    assert np.isfinite(focal).all() and focal.any()
    out["gradients"]["weighted+smoothed focal gamma 0"] = out["gradients"].pop("focal gamma 0.0")
    for name, grad in out["gradients"].items():
        weights, smoothing, ignore = SETTINGS[name.split()[0]]
        grad = np.asarray(grad)
        np.testing.assert_allclose(grad, _np_ce_gradient(truth[0], logits[0], weights, smoothing, ignore), atol=1e-6)
        ignored = (truth[0] < 0) | (truth[0] >= K)
        assert ignored.any() and not grad[ignored].any()  # ignored and out-of-range pixels get no gradient

    ours, keras_ce = out["keras_ce"][1], out["keras_ce"][0]
    assert ours == pytest.approx(keras_ce, rel=1e-5)

    cm_all = sum(_np_confusion(truth[b], logits[b], IGNORE) for b in range(2))
    cm_sub = sum(_np_confusion(truth[b], logits[b], 3) for b in range(2))
    got = out["metrics"]
    np.testing.assert_array_equal(np.asarray(got["all"]["total_cm"]), cm_all)
    np.testing.assert_array_equal(np.asarray(got["subset"]["total_cm"]), cm_sub)
    assert got["all"]["miou"] == pytest.approx(_np_miou(cm_all, range(K)))
    assert got["all"]["pixel_accuracy"] == pytest.approx(np.trace(cm_all) / cm_all.sum())
    assert got["subset"]["miou"] == pytest.approx(_np_miou(cm_sub, range(3)))
    assert got["subset"]["pixel_accuracy"] == pytest.approx(np.trace(cm_sub) / cm_sub.sum())
    assert out["reset_cm_sum"] == 0

    evaluated = out["evaluate"]
    expected_loss = np.mean([_np_loss(truth[b], logits[b], "ce", None, 0.0, IGNORE) for b in range(2)])
    assert evaluated["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert evaluated["miou"] == pytest.approx(_np_miou(cm_all, range(K)))
    assert evaluated["pixel_accuracy"] == pytest.approx(np.trace(cm_all) / cm_all.sum())

    assert out["registered"] == ["segcli>SegmentationLoss", "segcli>ConfusionMeanIoU", "segcli>ConfusionIoU"]
    assert out["copy_loss"][0] == "SegmentationLoss"
    assert out["copy_loss"][1] == pytest.approx(_np_loss(truth[0], logits[0], "focal", WEIGHTS, 0.1, IGNORE),
                                                rel=1e-5)
    assert out["copy_iou"] == ["ConfusionIoU", [0, 1, 2], 3]


if __name__ == "__main__":
    _child(sys.argv[1])
