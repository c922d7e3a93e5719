"""The one way segcli compiles a model for training: the recipe's optimizer and schedule, loss, metrics (with
segcli.scoring's ignore and void rules), XLA and steps per execution. `train` and the benchmark's bare fit
(segcli.bench.fit_rates) both call it, so the benchmark measures what training runs."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Compiled:
    """What compile_for_training settled: XLA on?, steps per execution, and the metrics compiled
    ([pixel accuracy, mIoU]; empty without metrics): the mIoU metric holds the val confusion matrix."""

    jit: bool
    steps_per_execution: int
    metrics: list = field(default_factory=list)


def compile_for_training(model, recipe, classes, steps_per_epoch: int, *, class_weights=None, strategy=None,
                         metrics: bool = True, gpu: bool | None = None, optimizer=None, aux: bool = False) -> Compiled:
    """Compile `model` as `segcli train` does and return the settings used.

    recipe: a segcli.recipe.Recipe (train.* for optimizer, schedule, loss, label smoothing, jit, steps per
    execution; data.void_as_class for the scoring rule). classes: the model's ClassMap (with void as its last
    class when data.void_as_class). steps_per_epoch: for the learning-rate schedule. class_weights: a list per
    class, or None. strategy: the training.distribute.Placement the model was built under (None: the default device).
    metrics=False: the loss only (the benchmark's "fit_plain"). gpu: None asks TensorFlow. optimizer: compile
    with this (already built) optimizer instead of a new one from the recipe, so its state (step count, hence the
    schedule, and moments) carries over: `train` re-compiles this way when it freezes or unfreezes an encoder.
    aux: `model` is a training model with an auxiliary head (segcli.training.aux): the loss scores both outputs,
    the head's with train.aux_weight.
    A new optimizer is built before it returns, over the model's trainable variables.
    A new optimizer gives a pretrained encoder's variables train.encoder_lr_mult times the learning rate (all of
    the encoder's, so also when it is compiled while frozen).
    """
    import keras

    from segcli.models import encoder_of
    from segcli.system import gpu_available
    from segcli.training.distribute import Placement, execution_settings, is_distributed
    from segcli.training.losses import make_loss
    from segcli.training.metrics import training_metrics
    from segcli.training.optim import make_optimizer

    strategy = strategy or Placement("default")
    if gpu is None:
        gpu = gpu_available()
    train = recipe.train
    jit, spe = execution_settings(train.jit, train.steps_per_execution, gpu=gpu,
                                  distributed=is_distributed(strategy), backend=keras.backend.backend())
    with strategy.scope():
        compiled_metrics = training_metrics(classes, recipe.data.void_as_class) if metrics else []
        # The loss skips only the ignore label (padding, and void unless void is trained as class K); the
        # scores always leave void out (segcli.scoring).
        if optimizer is None:
            encoder = encoder_of(model)
            optimizer = make_optimizer(train, steps_per_epoch, encoder.weights if encoder is not None else ())
        model.compile(optimizer=optimizer,
                      loss=make_loss(train.loss, classes.num_classes, classes.ignore_index, class_weights,
                                     train.label_smoothing, train.ohem_threshold, train.ohem_min_kept,
                                     train.aux_weight if aux else 0.0),
                      metrics=compiled_metrics or None, jit_compile=jit, steps_per_execution=spe)
        # Built now, over every trainable variable (the encoder's too: a freeze run's one optimizer serves each of
        # its phases), not in the first step: on TensorFlow, Keras builds it while tracing the train step when no
        # tf.distribute strategy is set, and a trace that creates variables is thrown away and traced again:
        # the first step of a tiny U-Net took 7.8 s instead of 4.3 (AMD EPYC, 2 cores)
        if not model.optimizer.built:  # (a LossScaleOptimizer's build is not idempotent)
            model.optimizer.build(model.trainable_variables)
    return Compiled(jit=jit, steps_per_execution=spe, metrics=compiled_metrics)
