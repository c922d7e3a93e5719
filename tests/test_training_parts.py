"""Losses, metrics, schedules, recipes, precision and strategy choice: the pieces `train` is built from."""

import numpy as np
import pytest

from segcli import recipe as recipes
from segcli.errors import SegcliError
from segcli.training.losses import SegmentationLoss, make_loss, median_frequency_weights
from segcli.scoring import scores_from_confusion
from segcli.training.metrics import segmentation_metrics


def _logits(pred, k):
    """One-hot logits (scale 10) for a (B,H,W) array of predicted classes."""
    return np.eye(k, dtype="float32")[pred] * 10.0


def test_metrics_leave_the_ignore_label_out():
    truth = np.array([[[0, 0, 1, 255]]])
    pred = np.array([[[0, 1, 1, 2]]])  # the ignored pixel is predicted wrong: it must not count
    acc, miou = segmentation_metrics(3, 255)
    for m in (acc, miou):
        m.update_state(truth, _logits(pred, 3))
    assert float(acc.result()) == pytest.approx(2 / 3)
    # IoU class 0: 1/2, class 1: 1/2, class 2: never in truth or prediction -> not averaged
    assert float(miou.result()) == pytest.approx(0.5)
    scores = scores_from_confusion(np.asarray(miou.total_cm))
    assert scores["iou"][:2] == pytest.approx([0.5, 0.5]) and scores["iou"][2] is None
    assert scores["pixel_accuracy"] == pytest.approx(2 / 3) and scores["pixels"] == 3


def test_void_trained_as_a_class_is_scored_as_an_error_not_a_class():
    # classes 0, 1 and void as class 2; truth void pixels are skipped, predicted void is wrong
    truth = np.array([[[0, 1, 2, 2]]])
    pred = np.array([[[0, 2, 2, 0]]])
    acc, miou = segmentation_metrics(3, 2, scored_classes=2)
    for m in (acc, miou):
        m.update_state(truth, _logits(pred, 3))
    assert float(acc.result()) == pytest.approx(1 / 2)
    assert float(miou.result()) == pytest.approx((1.0 + 0.0) / 2)  # mean over classes 0 and 1 only


@pytest.mark.parametrize("kind", ["ce", "focal", "dice", "ce+dice"])
def test_losses_ignore_void_pixels(kind):
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, (2, 4, 4)).astype("int32")
    truth[:, 0] = 255
    logits = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    other = logits.copy()
    other[:, 0] = rng.normal(size=other[:, 0].shape) * 5  # change only the ignored rows
    scored = logits.copy()
    scored[:, 1] = rng.normal(size=scored[:, 1].shape) * 5  # change a scored row
    loss = make_loss(kind, 3, 255, class_weights=None if kind == "ce" else [1.0, 2.0, 1.0])
    a, b, c = float(loss(truth, logits)), float(loss(truth, other)), float(loss(truth, scored))
    assert np.isfinite(a) and np.isfinite(c)
    assert a == pytest.approx(b, rel=1e-5)
    assert abs(c - a) > 1e-3 * abs(a)  # while the scored pixels count


def test_cross_entropy_equals_keras_own():
    import keras

    rng = np.random.default_rng(1)
    truth = rng.integers(0, 4, (2, 6, 5)).astype("int32")
    truth[0, :2] = 255
    logits = (rng.normal(size=(2, 6, 5, 4)) * 3).astype("float32")
    import tensorflow as tf

    def value_and_gradient(loss):
        x = tf.Variable(logits)
        with tf.GradientTape() as tape:
            value = loss(truth, x)
        return float(value), tape.gradient(value, x).numpy()

    ours, our_grad = value_and_gradient(make_loss("ce", 4, 255))
    keras_ce, keras_grad = value_and_gradient(
        keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255))
    assert ours == pytest.approx(keras_ce, rel=1e-5)
    np.testing.assert_allclose(our_grad, keras_grad, atol=1e-7)
    assert not our_grad[0, :2].any()  # ignored pixels get no gradient
    # label smoothing: the mean over valid pixels of -sum(target * log_softmax), target = (1 - e) onehot + e / K
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    valid = truth != 255
    target = np.eye(4)[np.where(valid, truth, 0)] * 0.9 + 0.1 / 4
    expected = float((-(target * log_probs).sum(-1))[valid].mean())
    assert float(make_loss("ce", 4, 255, label_smoothing=0.1)(truth, logits)) == pytest.approx(expected, rel=1e-5)
    # cross-entropy (class weights, smoothing) is the focal loss with gamma 0, value and gradient
    weights = [1.0, 2.0, 0.5, 1.5]
    ce = value_and_gradient(make_loss("ce", 4, 255, class_weights=weights, label_smoothing=0.1))
    focal = value_and_gradient(SegmentationLoss(4, 255, kind="focal", gamma=0.0, class_weights=weights,
                                                label_smoothing=0.1))
    assert ce[0] == pytest.approx(focal[0], rel=1e-5)
    np.testing.assert_allclose(ce[1], focal[1], atol=1e-6)


def test_confusion_update_matches_keras_mean_iou():
    import keras

    rng = np.random.default_rng(2)
    truth = rng.integers(0, 6, (3, 7, 9)).astype("int32")
    truth[truth == 5] = 255  # ignored
    logits = rng.normal(size=(3, 7, 9, 5)).astype("float32")
    reference = keras.metrics.MeanIoU(5, ignore_class=255, sparse_y_pred=False)
    reference.update_state(truth, logits)
    acc, miou = segmentation_metrics(5, 255)
    for m in (acc, miou):
        m.update_state(truth, logits)
    np.testing.assert_array_equal(np.asarray(miou.total_cm), np.asarray(reference.total_cm))
    assert float(miou.result()) == pytest.approx(float(reference.result()))
    valid = truth != 255
    assert float(acc.result()) == pytest.approx(float((logits.argmax(-1) == truth)[valid].mean()))
    miou.reset_state()
    assert float(np.asarray(miou.total_cm).sum()) == 0 and float(acc.result()) == 0.0


def test_class_weights_shift_the_loss_towards_the_weighted_class():
    truth = np.array([[[0, 1]]], dtype="int32")
    logits = np.array([[[[2.0, 0.0], [2.0, 0.0]]]], dtype="float32")  # class 0 right, class 1 wrong
    plain = float(SegmentationLoss(2, 255)(truth, logits))
    weighted = float(SegmentationLoss(2, 255, class_weights=[1.0, 3.0])(truth, logits))
    assert weighted > plain  # the wrong pixel's class weighs more


def test_median_frequency_weights():
    assert median_frequency_weights([50, 25, 25, 0]) == pytest.approx([0.5, 1.0, 1.0, 0.0])
    assert median_frequency_weights([64, 16, 4, 0], power=0.5) == pytest.approx([0.5, 1.0, 2.0, 0.0])


def test_recipe_flags_override_file_and_unknown_keys_list_valid_ones(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[model]\nname = "fcn"\n[model.options]\nvariant = "fcn16s"\n'
                    '[data]\nclasses = "cls.json"\n[train]\nepochs = 5\nlr = 0.01\n')
    r = recipes.resolve(path, {"train": {"epochs": 7, "lr": None}})
    assert r.train.epochs == 7 and r.train.lr == 0.01  # None = flag not given
    assert r.model.options == {"variant": "fcn16s"} and r.train.batch_size == 8
    assert r.data.classes == str((tmp_path / "cls.json").resolve())  # relative to the recipe
    recipes.save(r, tmp_path / "resolved.toml")
    assert recipes.load_resolved(tmp_path / "resolved.toml") == r
    path.write_text("[train]\nschedule = 'linear'\n")
    with pytest.raises(SegcliError, match="must be one of constant, step, cosine, onecycle"):
        recipes.resolve(path)
    path.write_text("[train]\nepochs = 'ten'\n")
    with pytest.raises(SegcliError, match="must be an integer"):
        recipes.resolve(path)


def test_shipped_recipes_resolve_and_build():
    from segcli.models import build_model, output_stride

    for name in ("lambda-fcn", "lambda-unet", "camvid-fcn", "camvid-unet", "sample-unet"):
        r = recipes.resolve(recipes.find_recipe(name))
        model = build_model(r.model.name, 12, **r.model.options)
        assert all(s % output_stride(model) == 0 for s in r.data.size), name
    with pytest.raises(SegcliError, match="shipped recipes: .*camvid-unet"):
        recipes.find_recipe("no-such-recipe")


def test_schedules():
    from segcli.training.optim import make_schedule

    from dataclasses import replace

    train = recipes.TrainSpec(lr=1.0, epochs=10)
    step = make_schedule(replace(train, schedule="step", step_epochs=(5,), step_gamma=0.1), 10)
    assert float(step(49)) == pytest.approx(1.0) and float(step(51)) == pytest.approx(0.1)
    one = make_schedule(replace(train, schedule="onecycle"), 10)
    assert float(one(0)) == pytest.approx(1 / 25) and float(one(30)) == pytest.approx(1.0, rel=1e-3)
    assert float(one(100)) < 0.01
    assert make_schedule(replace(train, schedule="constant"), 10) == 1.0


def test_precision_auto(monkeypatch):
    from segcli import precision

    monkeypatch.setattr(precision, "gpu_available", lambda: True)
    assert precision.resolve_precision("auto")[0] == "mixed_float16"
    monkeypatch.setattr(precision, "gpu_available", lambda: False)
    for flags, expected in (({"avx512_bf16"}, "mixed_bfloat16"), ({"amx_bf16", "avx512_bf16"}, "mixed_bfloat16"),
                            (set(), "float32")):  # each CPU kind: tests/test_precision.py
        monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
        assert precision.resolve_precision("auto")[0] == expected, flags
    assert precision.resolve_precision("mixed_float16") == ("mixed_float16", "chosen")


def test_strategy_choice(monkeypatch):
    from segcli.training.distribute import is_distributed, resolve_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy, desc = resolve_strategy("auto")
    assert strategy.num_replicas_in_sync == 1 and "single device" in desc
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}')
    with pytest.raises(SegcliError, match="keras-team/keras#20585"):  # Keras 3's fit fails on several machines
        resolve_strategy("auto")
    with pytest.raises(SegcliError, match="--distribute: must be one of auto, none, mirrored, multi, got 'ring'"):
        resolve_strategy("ring")
    assert not is_distributed(strategy)


def test_execution_settings_turn_xla_and_multi_step_calls_off_across_replicas():
    """A GPU gets XLA and 8 steps per call; a CPU neither; several replicas neither, and asking for them
    there is one line (Keras 3 fails on both under tf.distribute, reproduced on two logical CPUs)."""
    from segcli.training.distribute import execution_settings

    assert execution_settings("auto", 0, gpu=True, distributed=False) == (True, 8)
    assert execution_settings("auto", 0, gpu=False, distributed=False) == (False, 1)
    assert execution_settings("auto", 0, gpu=True, distributed=True) == (False, 1)
    assert execution_settings("false", 4, gpu=True, distributed=False) == (False, 4)
    assert execution_settings("true", 1, gpu=False, distributed=False) == (True, 1)
    with pytest.raises(SegcliError, match="--jit true does not work with a tf.distribute strategy"):
        execution_settings("true", 0, gpu=True, distributed=True)
    with pytest.raises(SegcliError, match="keras-team/keras#19246"):
        execution_settings("auto", 8, gpu=True, distributed=True)


def test_scoring_leaves_a_predicted_void_class_unscored():
    from segcli.scoring import confusion_counts

    truth = np.array([0, 0, 1, 1, 2, 255])  # 2 = void (ignored in truth), 255 = padding
    pred = np.array([0, 2, 1, 1, 0, 1])     # void predicted on a real class is an error
    cm = confusion_counts(truth, pred, 3, 2)
    assert cm.sum() == 4  # void and padding truth left out
    scores = scores_from_confusion(cm, scored_classes=2)
    assert scores["iou"] == pytest.approx([0.5, 1.0]) and scores["pixel_accuracy"] == pytest.approx(3 / 4)
    assert scores["miou"] == pytest.approx(0.75) and len(scores["class_accuracy"]) == 2


def test_compile_for_training_scores_only_the_dataset_classes_with_void_as_class():
    """The one compile path (train and bench's fit): void trained as class K is predicted but not scored."""
    import keras

    from segcli.data import camvid_classes
    from segcli.models import build_model
    from segcli.training.compile import compile_for_training

    classes = camvid_classes().with_void_as_class()
    model = build_model("unet", classes.num_classes, depth=2, base_filters=4)
    recipe = recipes.resolve(None, {"data": {"void_as_class": True}, "train": {"jit": "false"}})
    compiled = compile_for_training(model, recipe, classes, 10, gpu=False)
    assert (compiled.jit, compiled.steps_per_execution) == (False, 1)
    miou = compiled.metrics[1]
    assert isinstance(miou, keras.metrics.IoU) and list(miou.target_class_ids) == list(range(11))
    assert miou.ignore_class == 11 and model.loss.ignore_index == classes.ignore_index == 255
    plain = compile_for_training(model, recipes.resolve(), camvid_classes(), 10, metrics=False, gpu=False)
    assert plain.metrics == [] and model.loss.ignore_index == 11


def test_the_first_train_step_creates_no_variable_so_it_is_traced_once():
    """compile_for_training builds the optimizer over every trainable variable: the first step of fit creates no
    variable (on TensorFlow one that did would make Keras trace the step twice), and every later step updates
    the variables it was built over; a recompile with it (train's freeze and unfreeze) leaves it as it is."""
    import keras

    from segcli.data import camvid_classes
    from segcli.models import build_model
    from segcli.training.compile import compile_for_training

    classes = camvid_classes()
    model = build_model("unet", classes.num_classes, depth=2, base_filters=4)
    compile_for_training(model, recipes.resolve(), classes, 10, gpu=False)
    assert model.optimizer.built
    before = len(model.optimizer.variables)
    assert before > 2 * len(model.trainable_variables)  # Adam: two moments per variable, plus its counters
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype="float32")
    y = np.random.default_rng(1).integers(0, classes.num_classes, (2, 32, 32, 1)).astype("int32")
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        created = []

        def creator(next_creator, **kwargs):
            created.append(kwargs.get("name"))
            return next_creator(**kwargs)

        with tf.variable_creator_scope(creator):
            model.fit(x, y, epochs=1, batch_size=2, verbose=0)
        assert created == []
    else:
        model.fit(x, y, epochs=1, batch_size=2, verbose=0)
    assert len(model.optimizer.variables) == before
    compile_for_training(model, recipes.resolve(), classes, 10, gpu=False, optimizer=model.optimizer)
    assert len(model.optimizer.variables) == before
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 1


def test_training_does_not_import_evaluation():
    import subprocess
    import sys

    code = "import sys, segcli.training, segcli.training.compile; print('segcli.evaluation' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr[-2000:]


def test_ctrl_c_during_fit_is_held_to_the_batch_end_and_never_lost():
    """segcli.training.callbacks.CtrlC: inside `with`, SIGINT only sets a flag (and calls on_press once); the next
    batch end raises, and so does the end of the `with` when no batch end came; a second SIGINT raises at once;
    the handler is Python's own again afterwards. signal.raise_signal, not os.kill: kill() may deliver the signal
    to another thread (TensorFlow's), and the handler then runs some bytecodes later, racing the asserts."""
    import signal

    from segcli.training.callbacks import CtrlC

    said = []
    ctrl_c = CtrlC(lambda: said.append("stopping"))
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c:
            signal.raise_signal(signal.SIGINT)  # handled before it returns: no exception here
            assert ctrl_c.pressed == 1 and said == ["stopping"]
            ctrl_c.on_train_batch_end(0)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c:  # pressed after the last check (fit's own end): raised when the `with` ends
            signal.raise_signal(signal.SIGINT)
            assert ctrl_c.pressed == 1
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)  # the second one raises at once
            raise AssertionError("not reached")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with ctrl_c:  # no Ctrl-C: nothing raised
        ctrl_c.on_epoch_end(0)


def test_time_budget_says_after_the_second_epoch_when_the_planned_epochs_will_not_fit(monkeypatch):
    """A slow machine learns after epoch 2 (the first one traces; not after 30 minutes) that max_minutes ends the
    run early, with the number of epochs that fit as the stop rule counts them; a budget the epochs fit in says
    nothing; it is said once."""
    from segcli.training import callbacks

    clock = [0.0]
    monkeypatch.setattr(callbacks, "_clock", lambda: clock[0])

    def epochs(minutes, epoch_seconds, planned, count=4):
        told = []
        budget = callbacks.TimeBudget(minutes, planned, too_short=lambda *a: told.append(a))
        budget.set_model(type("M", (), {"stop_training": False})())
        budget.on_train_begin()
        for epoch in range(count):
            budget.on_epoch_begin(epoch)
            clock[0] += epoch_seconds * (3 if epoch == 0 else 1)  # the first epoch traces: 3x longer
            budget.on_epoch_end(epoch)
        return told, budget

    told, budget = epochs(30, 100.0, 45)  # 1800 s: 400 s for two epochs, then 14 more at 100 s an epoch
    assert told == [(16, 45, 100.0)] and not budget.stopped
    told, budget = epochs(30, 30.0, 45)  # 45 epochs in 1410 s: nothing to say
    assert told == [] and not budget.stopped
    told, budget = epochs(0, 100.0, 45)  # no budget
    assert told == []


@pytest.mark.parametrize("schedule, ends", [
    ("onecycle", "before its learning-rate schedule ends (--epochs 9 fits the schedule to the time)"),
    ("constant", "there"),
])
def test_train_says_early_that_the_time_budget_cuts_the_schedule(cli, sample_data, tmp_path, monkeypatch, schedule,
                                                                 ends):
    """Through `segcli train` with max_minutes: the note after epoch 2 names the epochs that fit and, where the
    schedule depends on the epochs, the --epochs that fits it; the run then stops (a clock of 20 s a call stands
    in for a slow machine)."""
    import json

    from conftest import tiny_recipe
    from segcli.training import callbacks

    clock = iter(range(20, 100000, 20))
    monkeypatch.setattr(callbacks, "_clock", lambda: float(next(clock)))
    recipe = tiny_recipe(tmp_path, epochs=12, extra=f'max_minutes = 4\nschedule = "{schedule}"')
    result = cli("train", "unet", sample_data, "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"at 20 s an epoch, max_minutes 4 fits about 9 of the 12 planned epochs: training will stop {ends}" in text
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["stopped_by_time_budget"] and metrics["epochs"] < 12


def test_class_weights_setting_names_and_files(tmp_path):
    from types import SimpleNamespace

    from segcli.errors import SegcliError
    from segcli.training.run import _class_weights

    report = SimpleNamespace(pixel_share=[0.64, 0.16, 0.04], void_share=0.16)
    assert _class_weights("none", report, 3) is None
    assert _class_weights("median-frequency", report, 3) == pytest.approx([0.25, 1.0, 4.0])
    assert _class_weights("sqrt-median-frequency", report, 3) == pytest.approx([0.5, 1.0, 2.0])
    assert _class_weights("sqrt-median-frequency", report, 4) == pytest.approx([0.5, 1.0, 2.0, 1.0])  # void too
    path = tmp_path / "w.json"
    path.write_text("[1, 2, 3]")
    assert _class_weights(str(path), report, 3) == [1.0, 2.0, 3.0]
    with pytest.raises(SegcliError, match="neither one of none, median-frequency, sqrt-median-frequency nor a file"):
        _class_weights("median-frequncy", report, 3)
