"""Pick a tf.distribute strategy, and how training steps run on it (XLA, steps per call).

The batch size in a recipe is always the global batch.
"""

from __future__ import annotations

import json
import os

from segcli.errors import SegcliError
from segcli.recipe import parse_switch

STRATEGIES = ("auto", "none", "mirrored")  # what --distribute takes


def resolve_strategy(choice: str = "auto"):
    """Return (strategy, description).

    auto: MirroredStrategy over all GPUs when there are two or more, else the default (single-device)
    strategy. Several machines are refused: Keras 3's model.fit fails under MultiWorkerMirroredStrategy
    (keras-team/keras#20585; reproduced with two workers on localhost, Keras 3.15).
    """
    import tensorflow as tf

    cluster = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}").get("cluster", {})
    if choice == "multiworker" or (choice == "auto" and len(cluster.get("worker", [])) > 1):
        raise SegcliError("training on several machines is not supported: Keras 3's model.fit fails under "
                          "MultiWorkerMirroredStrategy (keras-team/keras#20585); train on one machine "
                          "(several GPUs there: --distribute mirrored)")
    gpus = tf.config.list_logical_devices("GPU")
    if choice == "auto":
        choice = "mirrored" if len(gpus) > 1 else "none"
    if choice == "none":
        device = gpus[0].name if gpus else "CPU"
        return tf.distribute.get_strategy(), f"single device ({device})"
    if choice == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        return strategy, f"MirroredStrategy over {strategy.num_replicas_in_sync} devices"
    raise SegcliError(f"unknown --distribute {choice!r}; choose {', '.join(STRATEGIES[:-1])} or {STRATEGIES[-1]}")


def is_distributed(strategy) -> bool:
    """Any strategy but TensorFlow's default single-device one (what get_strategy() gives outside a scope)."""
    import tensorflow as tf

    return tf.distribute.has_strategy() or strategy is not tf.distribute.get_strategy()


def execution_settings(jit: bool | str | None = None, steps_per_execution: int = 0, *, gpu: bool, distributed: bool) -> tuple[bool, int]:
    """(XLA on?, steps per execution): on a GPU XLA and 8 steps per call, on a CPU neither (XLA was 3x slower
    on the project's 2-core AMD EPYC); across replicas neither, since Keras 3 cannot run them under
    tf.distribute: XLA compiles all replicas' step as one cluster that cannot reach the other devices'
    variables, and more than one step per call fails with "You must feed a value for placeholder tensor"
    (keras-team/keras#19246). Both were reproduced with MirroredStrategy over two logical CPUs; asking for
    them there is refused in one line.
    """
    try:
        jit = parse_switch(jit)  # auto | on | off | true | false, or None / a bool
    except ValueError as exc:
        raise SegcliError(f"--jit: {exc}") from None
    if jit is None:
        jit = gpu and not distributed
    spe = int(steps_per_execution) or (8 if gpu and not distributed else 1)
    if distributed and jit:
        raise SegcliError("--jit true does not work with a tf.distribute strategy in Keras 3 (XLA cannot reach the "
                          "other replicas' variables); use --jit auto or false")
    if distributed and spe > 1:
        raise SegcliError(f"steps_per_execution = {spe} fails with a tf.distribute strategy in Keras 3 "
                          "(keras-team/keras#19246); use 0 (auto) or 1")
    return jit, spe
