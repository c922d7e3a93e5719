"""Optimizer and learning-rate schedule from a recipe's [train] table (a segcli.recipe.TrainSpec).

Their names are segcli.choices.OPTIMIZERS and SCHEDULES; the recipe checks them when it is parsed.
"""

from __future__ import annotations


def make_schedule(train, steps_per_epoch: int):
    import keras

    lr = train.lr
    total = max(1, steps_per_epoch * train.epochs)
    warmup = int(train.warmup_epochs * steps_per_epoch)
    kind = train.schedule
    if kind == "constant":
        return lr
    if kind == "step":
        boundaries = [e * steps_per_epoch for e in train.step_epochs] or [total // 2]
        values = [lr * train.step_gamma ** i for i in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    if kind == "cosine":
        if warmup:
            return keras.optimizers.schedules.CosineDecay(lr * 0.01, max(1, total - warmup), alpha=0.01,
                                                          warmup_target=lr, warmup_steps=warmup)
        return keras.optimizers.schedules.CosineDecay(lr, total, alpha=0.01)
    if kind == "onecycle":  # warm up over 30% (or warmup_epochs), then cosine down to lr/1000
        warmup = warmup or int(0.3 * total)
        return keras.optimizers.schedules.CosineDecay(lr / 25, max(1, total - warmup), alpha=1e-3,
                                                      warmup_target=lr, warmup_steps=warmup)
    raise ValueError(kind)


def make_optimizer(train, steps_per_epoch: int, encoder_variables=()):
    """The recipe's optimizer over its schedule. With ``train.encoder_lr_mult`` other than 1, the variables in
    ``encoder_variables`` (a pretrained encoder's: segcli.models.encoder_of(model).weights) are stepped with
    the learning rate times the multiplier (their weight decay too), every other variable with the learning rate.
    With ``train.ema_momentum`` > 0 the optimizer also keeps an exponential moving average of the weights
    (Keras' use_ema), which training validates and saves."""
    import keras

    schedule = make_schedule(train, steps_per_epoch)
    wd = train.weight_decay or None
    name = train.optimizer
    if name == "adam":
        kind, options = keras.optimizers.Adam, dict(weight_decay=wd)
    elif name == "adamw":
        kind, options = keras.optimizers.AdamW, dict(weight_decay=wd or 1e-4)
    else:
        kind, options = keras.optimizers.SGD, dict(momentum=0.9, nesterov=True, weight_decay=wd)
    if train.ema_momentum:  # Keras keeps the average; segcli validates and saves it (callbacks.AveragedWeights)
        options.update(use_ema=True, ema_momentum=train.ema_momentum)
    optimizer = _keep_trained_weights(kind(schedule, **options))
    mult = train.encoder_lr_mult
    if mult == 1.0 or not encoder_variables:
        return optimizer
    # type(optimizer), not `kind`: on torch, Keras swaps in its own class (keras.optimizers.Adam -> its torch
    # Adam with a fused update), which the subclass keeps
    optimizer = _keep_trained_weights(_encoder_lr_class(type(optimizer))(schedule, **options))
    optimizer.encoder_lr_mult = float(mult)
    # keys, not the variables: a variable set on an optimizer would join (and be saved with) its own variables
    optimizer._encoder_keys = frozenset(optimizer._var_key(v) for v in encoder_variables)
    return optimizer


def _keep_trained_weights(optimizer):
    """With use_ema, Keras writes the average into the model's trainable weights when each fit ends: segcli trains
    in several fits (a frozen encoder's phases, a resumed run), where that would train on from the average (or
    fail: the frozen phase has fewer trainable weights than the average), and it saves the average itself
    (training.callbacks.AveragedWeights swaps it in for each save). So the model keeps its trained weights."""
    if optimizer.use_ema:
        optimizer.finalize_variable_values = lambda var_list: None
    return optimizer


class _EncoderLearningRate:
    """Mixed into a Keras optimizer class: the variables whose key (the optimizer's own ``_var_key``: the
    variable's identity, on TensorFlow its distributed container's id) is in ``_encoder_keys`` are updated with
    ``learning_rate * encoder_lr_mult``, and decayed with it, the others as the optimizer does. It overrides the
    two per-step hooks every backend's ``apply`` goes through (base ``_backend_apply_gradients``, JAX's own
    and so ``stateless_apply``): ``_backend_update_step`` (TensorFlow's all-reduce and distributed update,
    torch's fused ``_parallel_update_step``) and ``_apply_weight_decay``, each called once per group. No
    variables are added: the optimizer state saved in a run's backup is the parent class's."""

    encoder_lr_mult = 1.0
    _encoder_keys = frozenset()
    _lr_factor = 1.0  # while the encoder's weight decay runs: the learning rate the parent reads is scaled

    def _split(self, grads, variables):
        """((grads, variables) of the rest, (grads, variables) of the encoder)."""
        rest, encoder = ([], []), ([], [])
        for grad, variable in zip(grads, variables):
            group = encoder if self._var_key(variable) in self._encoder_keys else rest
            group[0].append(grad)
            group[1].append(variable)
        return rest, encoder

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        (rest_grads, rest), (enc_grads, enc) = self._split(list(grads), list(trainable_variables))
        if rest:
            super()._backend_update_step(rest_grads, rest, learning_rate)
        if enc:
            super()._backend_update_step(enc_grads, enc, learning_rate * self.encoder_lr_mult)

    def _apply_weight_decay(self, variables):
        variables = list(variables)
        (_, rest), (_, enc) = self._split(variables, variables)
        if rest:
            super()._apply_weight_decay(rest)
        if enc:
            self._lr_factor = self.encoder_lr_mult
            try:
                super()._apply_weight_decay(enc)
            finally:
                self._lr_factor = 1.0

    def _get_current_learning_rate(self):
        lr = super()._get_current_learning_rate()
        return lr if self._lr_factor == 1.0 else lr * self._lr_factor


_CLASSES: dict = {}


def _encoder_lr_class(base: type) -> type:
    """``base`` (the backend's optimizer class) with _EncoderLearningRate mixed in; one class per base."""
    if base not in _CLASSES:
        _CLASSES[base] = type(base.__name__, (_EncoderLearningRate, base), {"__module__": __name__})
    return _CLASSES[base]
