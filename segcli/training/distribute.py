"""Where training runs (one device, data-parallel over a machine's devices, several processes), on each Keras
backend, and how training steps run there (XLA, steps per call).

The batch size in a recipe is always the global batch.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass

from segcli.choices import STRATEGIES, check_choice, parse_switch
from segcli.errors import SegcliError, describe
from segcli.system import gpu_names

# Keras' own variables for several processes (keras.distribution.initialize reads them)
MULTI_ENV = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES", "KERAS_DISTRIBUTION_PROCESS_ID")


@dataclass
class Placement:
    """Where a model trains: `scope()` to build and compile it in, the devices that share each global batch
    (`num_replicas_in_sync`), and this process's place among several (`process_index` of `process_count`;
    only process 0 writes files and reports). On TensorFlow, `strategy` is the tf.distribute strategy."""

    description: str
    num_replicas_in_sync: int = 1
    distributed: bool = False
    process_index: int = 0
    process_count: int = 1
    strategy: object = None
    distribution: object = None  # keras.distribution's, on JAX

    def scope(self):
        """tf.distribute's scope; elsewhere nothing (JAX's DataParallel is Keras' global distribution)."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    @property
    def is_chief(self) -> bool:
        return self.process_index == 0


def multi_process_env() -> int:
    """How many processes Keras' variables ask for (0: not set; 1: one)."""
    if not os.environ.get(MULTI_ENV[1]):
        return 0
    missing = [name for name in MULTI_ENV if not os.environ.get(name)]
    try:
        count = int(os.environ[MULTI_ENV[1]])
        int(os.environ.get(MULTI_ENV[2], "0"))
    except ValueError:
        raise SegcliError(f"{MULTI_ENV[1]} and {MULTI_ENV[2]} must be whole numbers") from None
    if count > 1 and missing:
        raise SegcliError(f"training on {count} processes needs {', '.join(missing)} set too (Keras' distribution "
                          "variables: docs/backends.md, \"Several machines\")")
    return count


def resolve_strategy(choice: str = "auto") -> tuple[Placement, str]:
    """Return (placement, description) on the Keras backend in use.

    - auto: several processes where Keras' KERAS_DISTRIBUTION_* variables name more than one (JAX only), else
      data-parallel over every GPU when there are two or more, else one device.
    - mirrored: data-parallel over this machine's devices (tf.distribute.MirroredStrategy on TensorFlow,
      keras.distribution.DataParallel on JAX; PyTorch has no such path in Keras 3).
    - multi: several processes (one per host), keras.distribution.initialize() then DataParallel over every
      process's devices: JAX only. TensorFlow's way, MultiWorkerMirroredStrategy, fails in Keras 3's model.fit
      (keras-team/keras#20585, reproduced with two workers on localhost).
    """
    import keras

    backend = keras.backend.backend()
    try:
        check_choice(choice, STRATEGIES)
    except ValueError as exc:
        raise SegcliError(f"--distribute: {exc}") from None
    processes = multi_process_env()
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}").get("cluster", {})
    if choice == "multi" or (choice == "auto" and (processes > 1 or len(cluster.get("worker", [])) > 1)):
        if backend != "jax":
            raise SegcliError(f"training on several machines runs on the JAX backend (segcli --backend jax, with "
                              f"{', '.join(MULTI_ENV)} set); the {backend} backend cannot: "
                              + ("Keras 3's model.fit fails under MultiWorkerMirroredStrategy (keras-team/keras#20585)"
                                 if backend == "tensorflow" else "Keras 3 has no multi-process path for it"))
        if processes < 1:
            raise SegcliError(f"--distribute multi needs Keras' variables {', '.join(MULTI_ENV)} set in every process "
                              "(docs/backends.md, \"Several machines\")")
        return _jax_data_parallel(multi=True)
    if backend == "tensorflow":
        return _tf_strategy(choice)
    gpus = gpu_names()
    if choice == "auto":  # Keras' torch backend trains on one device
        choice = "mirrored" if len(gpus) > 1 and backend == "jax" else "none"
    if choice == "mirrored":
        if backend == "jax":
            return _jax_data_parallel(multi=False)
        raise SegcliError("--distribute mirrored runs on the tensorflow and jax backends; Keras 3's torch backend "
                          "trains on one device")
    return Placement(f"single device ({gpus[0] if gpus else 'CPU'})"), f"single device ({gpus[0] if gpus else 'CPU'})"


def _tf_strategy(choice: str) -> tuple[Placement, str]:
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if choice == "auto":
        choice = "mirrored" if len(gpus) > 1 else "none"
    if choice == "none":
        desc = f"single device ({gpus[0].name if gpus else 'CPU'})"
        return Placement(desc, strategy=tf.distribute.get_strategy()), desc
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices=devices)
    desc = f"MirroredStrategy over {strategy.num_replicas_in_sync} devices"
    return Placement(desc, strategy.num_replicas_in_sync, True, strategy=strategy), desc


_JAX_STATE: dict = {}  # whether this process has joined the others (jax.distributed.initialize runs once)
# jax.distributed's waits, in seconds: for the other processes to join, for a silent peer, at exit
JOIN_TIMEOUT, HEARTBEAT_TIMEOUT, SHUTDOWN_TIMEOUT = 300, 30, 300


def joined_others() -> bool:
    """Whether this process has joined other processes (jax.distributed.initialize ran): a failed one then leaves
    at once (the CLI's error guard), where a normal exit would wait at JAX's shutdown barrier for gone peers."""
    return bool(_JAX_STATE.get("joined"))


def _join_processes() -> None:
    """jax.distributed.initialize from Keras' variables (what keras.distribution.initialize does, but with
    timeouts we set: a peer that never comes ends the wait after JOIN_TIMEOUT instead of jax's 300 s default).
    Gloo carries the collectives between CPU processes (jax's default)."""
    import jax

    addresses = [a.strip() for a in os.environ[MULTI_ENV[0]].split(",") if a.strip()]
    count, index = int(os.environ[MULTI_ENV[1]]), int(os.environ[MULTI_ENV[2]])
    try:
        join_timeout = int(os.environ.get("SEGCLI_JOIN_TIMEOUT", JOIN_TIMEOUT))
    except ValueError:
        raise SegcliError("SEGCLI_JOIN_TIMEOUT must be whole seconds") from None
    if len(addresses) not in (1, count) or not 0 <= index < count:
        raise SegcliError(f"{MULTI_ENV[0]} must name the first process's host:port (or all {count}), and "
                          f"{MULTI_ENV[2]} be 0..{count - 1}; got {len(addresses)} address(es) and {index}")
    try:
        jax.distributed.initialize(coordinator_address=addresses[0], num_processes=count, process_id=index,
                                   initialization_timeout=join_timeout, heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT,
                                   shutdown_timeout_seconds=SHUTDOWN_TIMEOUT)
    except Exception as exc:  # an address in use, a bad host name
        raise SegcliError(f"joining the other processes at {addresses[0]} failed ({describe(exc)}); check "
                          f"{', '.join(MULTI_ENV)} on every host") from None


def _jax_data_parallel(multi: bool) -> tuple[Placement, str]:
    """keras.distribution.DataParallel over this machine's devices, or (multi) over every process's, set as
    Keras' global distribution (fit reads it). With several processes each feeds its own slice of every global
    batch (auto_shard_dataset=False: Keras would shard only a tf.data pipeline)."""
    import jax
    import keras

    if multi and not _JAX_STATE.get("joined"):
        _join_processes()
        _JAX_STATE["joined"] = True
    devices = jax.devices() if multi else jax.local_devices()
    distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
    keras.distribution.set_distribution(distribution)
    index, count = (jax.process_index(), jax.process_count()) if multi else (0, 1)
    kind = devices[0].platform.upper()
    desc = (f"DataParallel over {len(devices)} {kind} devices in {count} processes (this is process {index})"
            if multi else f"DataParallel over {len(devices)} {kind} devices")
    return Placement(desc, len(devices), True, index, count, distribution=distribution), desc


def any_process(placement: Placement, flag: bool) -> bool:
    """True when `flag` is true on any process (every process must call it at the same point)."""
    if placement.process_count < 2:
        return bool(flag)
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(np.max(multihost_utils.process_allgather(np.int32(bool(flag)))))


def wait_for_all(placement: Placement, name: str) -> None:
    """A barrier across the processes (nothing with one)."""
    if placement.process_count > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def leave_distribution(placement: Placement) -> None:
    """Back to one device per process (after training): loading a model or predicting under DataParallel would
    be a collective the other processes do not join."""
    if placement.distribution is not None:
        import keras

        keras.distribution.set_distribution(None)
        placement.distribution = None


def peer_lost(placement: Placement, exc: BaseException) -> bool:
    """An error from the collectives because another process died or left (gloo's connection errors)."""
    if placement.process_count < 2:
        return False
    text = str(exc)
    # JaxRuntimeError from a step's all-reduce; a ValueError from process_allgather (the time budget's vote)
    return any(word in text for word in ("Gloo", "gloo", "Connection reset", "Connection closed", "heartbeat",
                                         "barrier"))


def is_distributed(strategy) -> bool:
    """Whether the placement spreads each batch over several devices or processes."""
    return bool(getattr(strategy, "distributed", False))


def execution_settings(jit: bool | str | None = None, steps_per_execution: int = 0, *, gpu: bool, distributed: bool,
                       backend: str = "tensorflow") -> tuple[bool, int]:
    """(XLA on?, steps per execution) for `backend`.

    tensorflow: on a GPU XLA and 8 steps per call, on a CPU neither (XLA was 3x slower on the project's 2-core
    AMD EPYC); across replicas neither, since Keras 3 cannot run them under tf.distribute: XLA compiles all
    replicas' step as one cluster that cannot reach the other devices' variables, and more than one step per
    call fails with "You must feed a value for placeholder tensor" (keras-team/keras#19246). Both were
    reproduced with MirroredStrategy over two logical CPUs; asking for them there is refused in one line.
    jax: always XLA (without it Keras' JAX backend runs op by op), 8 steps per call on a GPU.
    torch: jit is torch.compile, off unless asked (docs/backends.md).
    """
    try:
        jit = parse_switch(jit)  # auto | on | off | true | false, or None / a bool
    except ValueError as exc:
        raise SegcliError(f"--jit: {exc}") from None
    tf_distributed = distributed and backend == "tensorflow"
    if jit is None:
        jit = backend == "jax" or (gpu and backend == "tensorflow" and not distributed)
    spe = int(steps_per_execution) or (8 if gpu and not tf_distributed else 1)
    if tf_distributed and jit:
        raise SegcliError("--jit true does not work with a tf.distribute strategy in Keras 3 (XLA cannot reach the "
                          "other replicas' variables); use --jit auto or false")
    if tf_distributed and spe > 1:
        raise SegcliError(f"steps_per_execution = {spe} fails with a tf.distribute strategy in Keras 3 "
                          "(keras-team/keras#19246); use 0 (auto) or 1")
    return jit, spe
