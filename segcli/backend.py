"""Which Keras 3 backend segcli runs on (tensorflow, jax or torch), chosen before Keras is imported, and what it
sees: its version and its GPUs.

The choice, first that applies: `segcli --backend NAME` (select), the KERAS_BACKEND variable, the "backend" of
Keras' own config file (~/.keras/keras.json), else the first installed of DEFAULT_ORDER. TensorFlow comes first
on a CPU because it trained fastest there (README, "Backends"); a machine without TensorFlow gets JAX, then
PyTorch, with nothing to set. Importing this module imports no backend.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

from segcli.errors import SegcliError

BACKENDS = ("tensorflow", "jax", "torch")
DEFAULT_ORDER = BACKENDS  # what an unset backend falls back to: the first of these that is installed
_ENV = "KERAS_BACKEND"


def installed(name: str) -> bool:
    """Whether the backend's package can be imported (found, not imported)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a poisoned sys.modules entry (tests) reads as "not installed"
        return False


def _keras_config_backend() -> str | None:
    """The backend named in Keras' config file, as Keras itself reads it (KERAS_HOME, else ~/.keras)."""
    home = os.environ.get("KERAS_HOME") or str(Path(os.path.expanduser("~")) / ".keras")
    try:
        value = json.loads((Path(home) / "keras.json").read_text()).get("backend")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def install_hint(extra: str) -> str:
    """The pip command that installs segcli with one of its extras (a backend, export, tune)."""
    return f"pip install 'segcli[{extra}]'"


def select(name: str | None = None) -> str:
    """Settle the backend for this process (and the child processes it starts) and return its name.

    name: what `--backend` asked for, or None to take KERAS_BACKEND / keras.json / the first installed.
    One line (SegcliError) for an unknown name, a backend that is not installed, or a different backend
    asked for after Keras was already imported in this process.
    """
    source = "--backend"
    if name is None:
        name, source = os.environ.get(_ENV), _ENV
    if not name:  # Keras writes keras.json itself, naming tensorflow, on any machine: used only when installed
        configured = _keras_config_backend()
        if configured in BACKENDS and installed(configured):
            name, source = configured, "~/.keras/keras.json"
    if not name:
        found = [b for b in DEFAULT_ORDER if installed(b)]
        if not found:
            raise SegcliError(f"no Keras backend is installed; install one: {install_hint('tensorflow')} "
                              f"(or [jax], or [torch])")
        name, source = found[0], None
    if name not in BACKENDS:
        where = f" ({source})" if source else ""
        raise SegcliError(f"unknown backend {name!r}{where}; valid: {', '.join(BACKENDS)}")
    if not installed(name):
        where = f" ({source})" if source else ""
        raise SegcliError(f"backend {name}{where} is not installed: {install_hint(name)}")
    keras = sys.modules.get("keras")
    if keras is not None:
        current = keras.backend.backend()
        if current != name:
            raise SegcliError(f"Keras is already loaded on {current} in this process; the backend must be chosen "
                              f"before Keras is imported (set {_ENV}={name} before starting Python)")
    os.environ[_ENV] = name
    return name


def name() -> str:
    """The backend Keras runs on (imports Keras)."""
    import keras

    return keras.backend.backend()


def version() -> str:
    """'jax 0.10.2', 'torch 2.13.0', 'tensorflow 2.21.0': the backend's package and version."""
    backend = name()
    module = importlib.import_module(backend)
    return f"{backend} {getattr(module, '__version__', '?')}"


def is_tensorflow() -> bool:
    return name() == "tensorflow"


def gpu_names() -> list[str]:
    """The GPUs the backend computes on, by name ([] on a CPU-only machine)."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        return [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
                for gpu in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return [getattr(d, "device_kind", str(d)) for d in jax.local_devices() if d.platform != "cpu"]
    import torch

    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def keep_tensorflow_out() -> None:
    """Off the TensorFlow backend, tell Keras that TensorFlow is not there, even where it is installed.

    Keras asks `tensorflow.available` (which imports it) when it saves any model and when it sets seeds, to
    handle TensorFlow objects; on jax or torch segcli hands it none, and importing TensorFlow there costs
    seconds and memory and prints its start-up lines. Nothing changes on the TensorFlow backend."""
    import keras

    if keras.backend.backend() == "tensorflow":
        return
    try:
        from keras.src.utils import module_utils
    except ImportError:  # another Keras layout: leave it as it is
        return
    lazy = getattr(module_utils, "tensorflow", None)
    if lazy is not None and getattr(lazy, "module", None) is None and hasattr(lazy, "_available"):
        lazy._available = False


def set_seed(seed: int) -> None:
    """keras.utils.set_random_seed (Python, NumPy, Keras, torch), without importing TensorFlow off its backend."""
    import keras

    keep_tensorflow_out()
    keras.utils.set_random_seed(seed)


COMPILE_CACHE_ENV = "SEGCLI_JAX_CACHE"  # a folder for JAX's compiled programs, or "off"
COMPILE_CACHE_MAX_BYTES = 2 << 30  # JAX deletes the least recently used programs beyond this


def _machine_fingerprint() -> str:
    """A short digest of what compiled CPU code depends on: the CPU (vendor, family, model, part and feature
    flags, from /proc/cpuinfo's first processor, x86 or ARM), the architecture and jaxlib's version, so that a
    home folder shared by different machines never hands one machine's code to another."""
    import hashlib
    import platform
    from importlib import metadata

    keys = ("vendor_id", "cpu family", "model", "model name", "flags", "CPU implementer", "CPU architecture",
            "CPU variant", "CPU part", "Features")
    found = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip() and found:
                break  # the first processor's block is enough
            key, _, value = line.partition(":")
            if key.strip() in keys:
                found.setdefault(key.strip(), " ".join(sorted(value.split())) if key.strip() in ("flags", "Features")
                                 else value.strip())
    except OSError:
        pass
    try:
        jaxlib = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        jaxlib = "?"
    text = "\n".join([platform.machine(), platform.processor(), jaxlib, *(f"{k}={found[k]}" for k in sorted(found))])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def keep_compiled_programs() -> Path | None:
    """On the jax backend, keep the programs XLA compiles in a folder on disk, and load them in later runs.

    JAX compiles every program it runs, down to each variable initializer of a model being built or loaded:
    dozens of compilations of a second or more each on a small CPU, in every `segcli predict` or `train`. Its
    persistent compilation cache keeps them (those that took 0.1 s or more to compile): the second `predict` of
    a model on jax then takes seconds instead of a minute. The folder is SEGCLI_JAX_CACHE if set ("off": no
    cache), else $XDG_CACHE_HOME/segcli/jax/<this machine's fingerprint> (~/.cache when XDG_CACHE_HOME is
    unset), at most COMPILE_CACHE_MAX_BYTES where the filelock package is there (JAX's eviction needs it);
    JAX's own JAX_COMPILATION_CACHE_DIR, when set, is left as it is. Set as environment variables, so child
    processes (compare, bench) share it. Nothing on the other backends; returns the folder (None: none).
    """
    if os.environ.get(_ENV) != "jax":
        return None
    own = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if own:
        return Path(own)
    setting = os.environ.get(COMPILE_CACHE_ENV, "")
    if setting.lower() == "off":
        return None
    if setting:
        folder = Path(setting).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path(os.path.expanduser("~")) / ".cache")
        folder = Path(base) / "segcli" / "jax" / _machine_fingerprint()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: compile every time, as JAX does by default
    values = {"jax_compilation_cache_dir": str(folder), "jax_persistent_cache_min_compile_time_secs": 0.1}
    if importlib.util.find_spec("filelock") is not None:  # JAX's size limit (LRU eviction) needs it
        values["jax_compilation_cache_max_size"] = COMPILE_CACHE_MAX_BYTES
    for key, value in values.items():
        os.environ.setdefault(key.upper(), str(value))  # the user's own size or time limit stays
    if "jax" in sys.modules:  # too late for the variables in this process
        import jax

        for key, value in values.items():
            jax.config.update(key, type(value)(os.environ[key.upper()]))
    return folder
