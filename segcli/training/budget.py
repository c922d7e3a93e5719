"""Will a training fit in memory? Checked before the model is built and before a run folder is made.

`check_training_fits` builds the model once without its weights (in a `keras.StatelessScope` that leaves the
variables uninitialised: shapes only, no memory, a fraction of a second for the shipped models), reads its
parameter count, output stride and per-image activations at the crop size (segcli.models.info), and refuses
in one line what cannot fit:

- a `depth` so large that 2**depth outgrows the crop: refused before building (building one takes minutes
  and gigabytes; Keras' graph walks fail on it with a RecursionError);
- an output stride larger than the crop's shorter side;
- an estimate over the memory available here.

The estimate is deliberately on the high side (float32 whatever the precision; the global batch on each
process): parameters x 4 bytes x 4 (weights, gradients, two Adam moments) + activations per image x batch
x 4 bytes x ACTIVATION_COPIES (each layer's output kept for the backward pass, its gradient, and the
backend's workspace) + 1 GB for the backend and the input pipeline. Every shipped recipe estimates well under
24 GB (camvid-unet at 352x480 batch 8 about 3.5 GB, where its training peaked at 2.5 GB of RSS; lambda-unet at
368x480 batch 16 about 4.7 GB; the largest, camvid-unet-mobilenetv3large, about 7.6 GB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import psutil

from segcli.errors import SegcliError
from segcli.models import build_model
from segcli.models.info import activation_count, output_stride

BYTES = 4  # float32, the widest training precision
STATE_COPIES = 4  # weights, gradients, Adam's two moments
ACTIVATION_COPIES = 3  # the forward output kept for the backward pass, its gradient, workspace
GB = 1024 ** 3
RUNTIME = 1 * GB  # the backend's own libraries and buffers, and the input pipeline's


@dataclass(frozen=True)
class MemoryEstimate:
    params: int
    activations_per_image: int
    output_stride: int
    bytes: int  # the whole estimate

    def describe(self) -> str:
        return (f"{self.bytes / GB:.1f} GB ({self.params:,} parameters, {self.activations_per_image:,} "
                f"activations per image)")


def available_memory() -> int:
    """Bytes of memory this machine can give now (psutil's `available`: free + reclaimable caches)."""
    return int(psutil.virtual_memory().available)


def _weightless_model(name: str, num_classes: int, options: dict):
    """The model built for its shapes only: its variables stay uninitialised (no memory), pretrained weights are
    not loaded (they change no shape)."""
    options = dict(options)
    if "encoder_weights" in options:
        options["encoder_weights"] = None
    from keras.src.backend.common import global_state  # where Keras lists variables to initialise later

    pending = global_state.get_global_attribute("uninitialized_variables", [], set_to_default=True)
    before = len(pending)
    try:
        with keras.StatelessScope(initialize_variables=False):
            return build_model(name, num_classes, **options)
    finally:
        del pending[before:]  # never initialised later (JAX's stateless training steps would allocate them)


def estimate_training_memory(name: str, num_classes: int, options: dict, size: tuple[int, int],
                             batch_size: int) -> MemoryEstimate:
    """The memory a training of model `name` with `options` takes at crop `size` and `batch_size` (see the
    module's docstring); refuses (SegcliError) a model that cannot be trained at that size at all."""
    height, width = (int(s) for s in size)
    label = f"{name} at {height}x{width}"
    depth = options.get("depth")
    deep = isinstance(depth, int) and not isinstance(depth, bool) and depth > 1
    if deep and 2 ** min(depth, 64) > max(height, width):
        raise SegcliError(f"depth {depth} cannot train {label}: each level halves the image, and {depth} levels "
                          f"need a crop side of at least 2**{depth} pixels; use a smaller depth")
    try:
        model = _weightless_model(name, num_classes, options)
    except RecursionError:
        raise SegcliError(f"model {name} with these options is too deep to build") from None
    stride = output_stride(model)
    if stride > min(height, width):
        raise SegcliError(f"model {name} has an output stride of {stride}, more than the crop {height}x{width} "
                          "(--size, [data] size): use a larger size or a shallower model")
    params = sum(math.prod(v.shape) for v in model.weights)
    per_image = activation_count(model, height, width)
    total = RUNTIME + params * BYTES * STATE_COPIES + per_image * int(batch_size) * BYTES * ACTIVATION_COPIES
    return MemoryEstimate(params=params, activations_per_image=per_image, output_stride=stride, bytes=total)


def check_training_fits(name: str, num_classes: int, options: dict, size: tuple[int, int], batch_size: int,
                        *, available: int | None = None) -> MemoryEstimate:
    """The estimate, or SegcliError in one line when it is over `available` (default: this machine's available
    memory) or the model cannot train at `size` at all."""
    estimate = estimate_training_memory(name, num_classes, options, size, batch_size)
    available = available_memory() if available is None else available
    if estimate.bytes > available:
        height, width = size
        raise SegcliError(f"training {name} at {height}x{width}, batch {batch_size} needs about "
                          f"{estimate.describe()}, more than the {available / GB:.1f} GB of memory available "
                          "here: use a smaller --size, --batch-size or model")
    return estimate


__all__ = ["MemoryEstimate", "available_memory", "check_training_fits", "estimate_training_memory"]
