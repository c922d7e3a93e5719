"""Optimizer and learning-rate schedule from a recipe's [train] table (a segcli.recipe.TrainSpec)."""

from __future__ import annotations

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "step", "cosine", "onecycle")


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


def make_optimizer(train, steps_per_epoch: int):
    import keras

    schedule = make_schedule(train, steps_per_epoch)
    wd = train.weight_decay or None
    name = train.optimizer
    if name == "adam":
        return keras.optimizers.Adam(schedule, weight_decay=wd)
    if name == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=wd or 1e-4)
    return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, weight_decay=wd)
