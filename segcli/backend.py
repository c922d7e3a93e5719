"""Which Keras 3 backend segcli runs on (tensorflow, jax or torch), chosen before Keras is imported, and what it
sees: its version and its GPUs.

The choice, first that applies: `segcli --backend NAME` (select), the KERAS_BACKEND variable, the "backend" of
Keras' own config file (~/.keras/keras.json), else the first installed of DEFAULT_ORDER. TensorFlow comes first
on a CPU because it trained fastest there (docs/backends.md); a machine without TensorFlow gets JAX, then
PyTorch, with nothing to set. Importing this module imports no backend.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import sys
import warnings
from pathlib import Path

from segcli.errors import SegcliError

BACKENDS = ("tensorflow", "jax", "torch")
DEFAULT_ORDER = BACKENDS  # what an unset backend falls back to: the first of these that is installed
BACKEND_ENV = "KERAS_BACKEND"  # what Keras reads; select() sets it for this process and its children
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"  # TensorFlow's switch for its oneDNN kernels, read once when it loads


def prefer_onednn() -> bool:
    """Turn on TensorFlow's oneDNN kernels (ONEDNN_ENV=1) on x86-64 Linux, unless the variable is set already (the
    user's choice stands) or TensorFlow is loaded (too late); True if this call set it. segcli's package import
    calls it, so the CLI, a Python user and every child process (bench, compare) get it.

    TensorFlow turns them on by itself only on CPUs with AVX512_VNNI, AVX512_BF16 or AMX; elsewhere its
    convolutions run on Eigen. On the 2-core AVX2-only EPYC (float32) oneDNN trained the lambda nets 1.5x / 1.4x
    faster (bare fit 5.3 -> 8.1 and 4.1 -> 5.8 images/s; docs/backends.md). Nothing changes on jax or torch,
    which never load TensorFlow, nor where TensorFlow already had them on."""
    if os.environ.get(ONEDNN_ENV) is not None or "tensorflow" in sys.modules:
        return False
    if not (sys.platform.startswith("linux") and platform.machine() == "x86_64"):
        return False
    os.environ[ONEDNN_ENV] = "1"
    return True


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
        name, source = os.environ.get(BACKEND_ENV), BACKEND_ENV
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
                              f"before Keras is imported (set {BACKEND_ENV}={name} before starting Python)")
    os.environ[BACKEND_ENV] = name
    return name


def name() -> str:
    """The backend Keras runs on (imports Keras)."""
    import keras

    return keras.backend.backend()


def version() -> str:
    """'jax 0.10.2', 'torch 2.13.0', 'tensorflow 2.21.0 (oneDNN on)': the backend's package and version, and on
    TensorFlow whether its oneDNN kernels run (prefer_onednn; a 1.5x difference on an AVX2 CPU)."""
    backend = name()
    module = importlib.import_module(backend)
    text = f"{backend} {getattr(module, '__version__', '?')}"
    onednn = tensorflow_onednn() if backend == "tensorflow" else None
    return text if onednn is None else f"{text} (oneDNN {'on' if onednn else 'off'})"


def tensorflow_onednn() -> bool | None:
    """Whether the loaded TensorFlow runs its oneDNN kernels (None where it cannot tell: a private TensorFlow
    function, absent from some builds)."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except Exception:  # noqa: BLE001 (a private API: absent or failing means "cannot tell")
        return None


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


TF_LOG_ENV = "TF_CPP_MIN_LOG_LEVEL"  # TensorFlow's C++ log level, read when it loads


def quiet_tensorflow_logs() -> None:
    """Keep TensorFlow's C++ log lines (below fatal) out of the output, unless the user set TF_LOG_ENV; before
    TensorFlow loads. Child processes inherit it."""
    os.environ.setdefault(TF_LOG_ENV, "3")


# Python warnings a library prints where segcli's use is right: Keras' note that a model built with a list of
# inputs was called with one tensor (on torch, at every predict and fit)
LIBRARY_NOTES = (r"The structure of `inputs` doesn't match the expected structure",)


def mute_library_notes() -> None:
    """Keep LIBRARY_NOTES (Python warnings, which print their file and source line) out of the output."""
    for message in LIBRARY_NOTES:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)


def import_quietly() -> None:
    """Import Keras and its backend with fd 2 muted: TensorFlow's C++ side (absl's "WARNING: All log messages
    before absl::InitializeLog()", I0000/E0000 lines such as cuInit's) and JAX's device probe print to fd 2
    before any log level applies. On TensorFlow the devices are found here too (it prints then as well); JAX's
    must wait (several processes join before JAX touches a device). The CLI calls it before a command runs,
    and so does every child process that trains (compare's). An import that fails is left to the real import
    later, which reports it. Keras' needless Python warnings are muted too (mute_library_notes)."""
    quiet_tensorflow_logs()
    mute_library_notes()
    if "keras" in sys.modules:
        return
    try:
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    os.dup2(devnull, 2)
    try:
        import keras

        keep_tensorflow_out()
        if keras.backend.backend() == "tensorflow":
            gpu_names()
    except Exception:  # noqa: BLE001 - the real import, later, reports the problem
        pass
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


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

