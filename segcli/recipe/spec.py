"""The typed recipe's tables: `ModelSpec`, `DataSpec`, `TrainSpec`, frozen; their field defaults are THE defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelSpec:
    """[model]: an architecture from the registry and its builder's options (checked against its signature)."""

    name: str = "unet"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSpec:
    """[data]: crop size, augmentation, the val split and the classes file."""

    size: tuple[int, int] = (256, 256)           # training crop, height x width
    scale: tuple[float, float] = (0.75, 1.25)    # random scale factor range (ignored when short_side is set)
    short_side: tuple[int, ...] = ()             # random short-side resize range in pixels, e.g. (400, 600)
    center_crop: bool = False                    # crop the centre instead of a random window
    flip: bool = True
    void_as_class: bool = False                  # train the ignore label as an extra class (the tutorial's protocol)
    val_fraction: float = 0.1                    # held out of train when the data has no val split
    eval_short_side: int = 0                     # resize val images' short side first (0: keep the size)
    eval_crop: tuple[int, ...] = ()              # centre-crop val images to this size after the resize
    cache: bool | None = None                    # keep decoded images in memory: None (auto) | True | False
    classes: str = ""                            # classes.json, relative to the recipe file (--classes wins)
    palette_by_colour: bool = False              # palette masks: entries map to classes by colour, not index
    train_splits: tuple[str, ...] = ("train",)   # the splits trained on; with "val" there is no val score


@dataclass(frozen=True)
class TrainSpec:
    """[train]: optimiser, schedule, loss, precision, devices, run length."""

    epochs: int = 20
    batch_size: int = 8                          # the global batch (all replicas)
    optimizer: str = "adam"                      # choices: segcli.choices.OPTIMIZERS
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"                   # choices: segcli.choices.SCHEDULES
    step_epochs: tuple[int, ...] = ()            # schedule=step: epochs after which lr *= step_gamma
    step_gamma: float = 0.1
    warmup_epochs: float = 0.0
    loss: str = "ce"                             # choices: segcli.choices.LOSSES
    class_weights: str = "none"                  # none | segcli.training.losses.CLASS_WEIGHTINGS | a JSON list file
    label_smoothing: float = 0.0
    ohem_threshold: float = 0.7                  # loss = "ohem": a pixel is hard below this true-class probability
    ohem_min_kept: float = 0.0625                # loss = "ohem": at least this share of the batch's pixels kept
    aux_weight: float = 0.0                      # > 0: an auxiliary head's loss, times this, in training only
    aux_stride: int = 16                         # the auxiliary head reads the last feature map at this stride
    ema_momentum: float = 0.0                    # > 0: validate and save an average of the weights (Keras use_ema)
    precision: str = "auto"                      # auto or one of segcli.choices.PRECISIONS
    distribute: str = "auto"                     # choices: segcli.choices.STRATEGIES
    jit: bool | None = None                      # XLA: None (auto: on with one GPU) | True | False
    steps_per_execution: int = 0                 # 0: automatic
    max_minutes: float = 0.0                     # stop after this much training time (0: no limit)
    seed: int = 0
    freeze_encoder_epochs: int = 0               # a pretrained encoder stays frozen (decoder only) this many epochs
    encoder_lr_mult: float = 1.0                 # a pretrained encoder learns at lr times this (its weight decay too)


TABLES = {"model": ModelSpec, "data": DataSpec, "train": TrainSpec}
TUNE_TABLE = "tune"  # [tune]: the keys `segcli tune` searches (segcli.tune reads and checks it; training ignores it)
SWITCH_KEYS = {("data", "cache"), ("train", "jit")}  # auto | true | false: None or a bool on the spec


def held_out(saved: dict | None) -> tuple[float, int]:
    """(val_fraction, seed) of the split a model was trained with, from the recipe tables its model file
    stores (segcli.modelfile meta "recipe"), else the defaults: what `evaluate` uses to find that val split."""
    data, train = (saved or {}).get("data") or {}, (saved or {}).get("train") or {}
    return float(data.get("val_fraction", DataSpec.val_fraction)), int(train.get("seed", TrainSpec.seed))
