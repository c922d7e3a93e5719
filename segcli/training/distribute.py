"""Pick a tf.distribute strategy. The batch size in a recipe is always the global batch."""

from __future__ import annotations

import json
import os

import tensorflow as tf

from segcli.errors import SegcliError


def resolve_strategy(choice: str = "auto") -> tuple[tf.distribute.Strategy, str]:
    """Return (strategy, description).

    auto: MultiWorkerMirrored when TF_CONFIG names several workers, Mirrored over all GPUs when
    there are two or more, else the default (single-device) strategy.
    """
    gpus = tf.config.list_logical_devices("GPU")
    if choice == "auto":
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}").get("cluster", {})
        if len(cluster.get("worker", [])) > 1:
            choice = "multiworker"
        elif len(gpus) > 1:
            choice = "mirrored"
        else:
            choice = "none"
    if choice == "none":
        device = gpus[0].name if gpus else "CPU"
        return tf.distribute.get_strategy(), f"single device ({device})"
    if choice == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        return strategy, f"MirroredStrategy over {strategy.num_replicas_in_sync} devices"
    if choice == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise SegcliError("--distribute multiworker needs the TF_CONFIG environment variable (see README)")
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        return strategy, f"MultiWorkerMirroredStrategy, {strategy.num_replicas_in_sync} replicas"
    raise SegcliError(f"unknown --distribute {choice!r}; choose auto, none, mirrored or multiworker")
