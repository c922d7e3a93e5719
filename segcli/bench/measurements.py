"""The benchmark's other measurements, each a plain function (for the sections and the scripts in
benchmarks/): the backend (`backend_info`), the matmul peak (`matmul_gflops`), the input pipeline alone
(`pipeline_rate`), predict (`predict_rate`), the peak memory of a tiled predict in a child process
(`tiled_predict_memory`) and the PyTorch reference in a child process (`torch_reference_rates`). One that
cannot run on this backend or machine raises `Unavailable`, saying why. They run on the active Keras backend
(keras.ops, device tensors); this module imports no TensorFlow itself.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Iterable

from segcli.bench.child import run_in_child
from segcli.bench.data import ROOT, BenchData, write_big_image
from segcli.bench.settings import BenchSettings, bench_model
from segcli.bench.timing import free_memory, time_calls
from segcli.backend import set_seed
from segcli.sizes import round_up


def backend_info() -> dict:
    """The active Keras backend (segcli.backend): its name ("tensorflow", "jax", "torch"), its package and
    version ("jax 0.10.2"), and Keras' version."""
    import keras

    from segcli import backend

    return {"backend": backend.name(), "backend_version": backend.version(), "keras": keras.__version__}


class Unavailable(Exception):
    """A section (or one measurement of it) cannot run on this backend or machine; the message says why
    (run_bench keeps it in result["unavailable"] and goes on)."""


def _finished(tensors) -> None:
    """Wait until the device has computed `tensors`: read one element of each to the host (a tiny reduction
    that depends on all of them; jax and a GPU run asynchronously, this is their sync)."""
    import keras

    ops = keras.ops
    total = None
    for t in tensors:
        corner = ops.cast(t[0, 0], "float32")
        total = corner if total is None else total + corner
    ops.convert_to_numpy(total)


def matmul_gflops(dtype: str = "float32", n: int = 2048, min_seconds: float = 2.0) -> float:
    """GFLOP/s of keras.ops.matmul of two n x n matrices of `dtype` (2 n^3 per product) on the active backend's
    device, after a warm-up; the clock stops when every product is done."""
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = (keras.ops.cast(keras.ops.convert_to_tensor(rng.standard_normal((n, n), dtype=np.float32)), dtype)
            for _ in range(2))
    chunk = 4  # products queued between syncs (a GPU or jax runs them asynchronously; _finished waits)

    def run():
        _finished([keras.ops.matmul(a, b) for _ in range(chunk)])

    calls, seconds = time_calls(run, warmup=1, min_calls=2, min_seconds=min_seconds)
    return 2.0 * n ** 3 * chunk * calls / seconds / 1e9


def build_bench_model(model_name: str, num_classes: int):
    """The net a benchmark model name stands for (settings.bench_model: MODEL or MODEL:ENCODER), random init."""
    from segcli.models import build_model

    base, options = bench_model(model_name)
    return build_model(base, num_classes, **options)


def pipeline_engines() -> tuple[tuple[str, ...], str | None]:
    """(the input pipelines `pipeline_rate` times on this backend, a note on what it leaves out or None):
    tf.data ("tfdata") and the NumPy loader ("numpy") on TensorFlow; elsewhere the loader only (tf.data needs
    TensorFlow)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        return ("tfdata", "numpy"), None
    return ("numpy",), "tf.data needs TensorFlow"


def pipeline_rate(data: BenchData, settings: BenchSettings, engine: str = "auto") -> float:
    """Images/s of the training input pipeline alone (train's augmentation: short-side resize, centre crop);
    engine: make_pipeline's ("tfdata", "numpy"; "auto": the backend's)."""
    from segcli.data import Augment, open_dataset, pipeline_throughput

    dataset = open_dataset(data.root, val_fraction=0.0)
    augment = Augment(short_side=tuple(settings.short_side), crop=tuple(settings.train_size), center_crop=True,
                      flip=False)
    return float(pipeline_throughput(dataset.splits["train"], dataset.classes, dataset.encoding,
                                     batch_size=settings.batch_size, batches=settings.pipeline_batches,
                                     augment=augment, void_as_class=True, engine=engine))


def predict_rate(model_name: str, precision: str, settings: BenchSettings, jit: bool, num_classes: int = 12) -> dict:
    """Images/s of model.predict_on_batch on (batch, H, W, 3), H x W padded up to the output stride
    (as `segcli predict` pads)."""
    import numpy as np

    from segcli.models import output_stride
    from segcli.precision import policy

    with policy(precision):
        model = build_bench_model(model_name, num_classes)
    model.compile(jit_compile=jit)
    stride = output_stride(model)
    h, w = (round_up(s, stride) for s in settings.predict_size)
    x = np.random.default_rng(0).uniform(0, 255, (settings.predict_batch, h, w, 3)).astype(np.float32)
    calls, seconds = time_calls(lambda: model.predict_on_batch(x), warmup=2, min_calls=3,
                                min_seconds=settings.min_seconds)
    del model
    free_memory()
    return {"images_per_sec": calls * settings.predict_batch / seconds, "padded_size": [h, w]}


def tiled_child(spec: dict) -> dict:
    """In the child process: build the model, predict the big image with predict_files, report memory.

    spec: model, classes, image, out, tile, overlap, batch; optionally options (the builder's keywords),
    probabilities and overlay (what predict_files also writes)."""

    from segcli.data import default_classes
    from segcli.inference import predict_files
    from segcli.modelfile import LoadedModel
    from segcli.models import build_model, output_stride
    from segcli.system import peak_rss_mb

    set_seed(0)
    model = build_model(spec["model"], int(spec["classes"]), **spec.get("options", {}))
    loaded = LoadedModel(model, default_classes(int(spec["classes"])), output_stride(model))
    before = peak_rss_mb()
    start = time.perf_counter()
    records = predict_files(loaded, [Path(spec["image"])], Path(spec["out"]), tile=int(spec["tile"]),
                            overlap=int(spec["overlap"]), batch_size=int(spec["batch"]),
                            probabilities=bool(spec.get("probabilities", False)),
                            overlay=bool(spec.get("overlay", False)))
    seconds = time.perf_counter() - start
    rec = records[0]
    return {"peak_rss_mib": peak_rss_mb(), "peak_rss_before_predict_mib": before, "seconds": seconds,
            "megapixels_per_sec": rec.height * rec.width / seconds / 1e6}


def tiled_predict_memory(model_name: str, settings: BenchSettings, workdir: str | Path, num_classes: int = 12,
                         timeout: float = 3600) -> dict:
    """Peak RSS (the child's own, resource.getrusage) of `predict_files` on one tiled_size^2 PNG in a child
    process, with the child's peak before predicting (Python + TensorFlow + model) and the seconds."""
    workdir = Path(workdir)
    image = write_big_image(workdir / f"big_{settings.tiled_size}.png", settings.tiled_size)
    base, options = bench_model(model_name)
    spec = {"model": base, "options": options, "classes": num_classes, "image": str(image),
            "out": str(workdir / "tiled-out"), "tile": settings.tile, "overlap": settings.overlap,
            "batch": settings.tiled_batch}
    try:
        result = run_in_child("segcli.bench.measurements:tiled_child", spec, what="tiled predict", timeout=timeout)
    finally:
        image.unlink(missing_ok=True)
        shutil.rmtree(workdir / "tiled-out", ignore_errors=True)
    return {"model": model_name, "size": [settings.tiled_size, settings.tiled_size], "tile": settings.tile,
            "overlap": settings.overlap, "batch": settings.tiled_batch, **result}


TORCH_MODES = ("eager", "compiled")  # the PyTorch reference's modes (torch.compile's first step timed apart)
TORCH_REFERENCE = ROOT / "benchmarks" / "torch_reference.py"
TORCH_HINT = "pip install torch (CPU-only wheels: --index-url https://download.pytorch.org/whl/cpu)"


def torch_installed() -> bool:
    from segcli.backend import installed

    return installed("torch")


def torch_reference_rates(models: Iterable[str], precisions: Iterable[str], settings: BenchSettings,
                          num_classes: int = 12, modes: Iterable[str] | None = None, timeout: float = 3600) -> dict:
    """benchmarks/torch_reference.py's run_reference in a child process, at the bench's training size, batch,
    steps and repeats: per model (lambda-fcn, lambda-unet; others have no reference), precision (mixed_bfloat16
    only where the CPU has native bf16) and mode (eager, compiled), images/s and the first step's seconds."""
    if not torch_installed():
        raise Unavailable(f"PyTorch is not installed: {TORCH_HINT}")
    if not TORCH_REFERENCE.is_file():
        raise Unavailable(f"needs {TORCH_REFERENCE.relative_to(ROOT)} from a segcli checkout (not found beside "
                          "this segcli)")
    from segcli.precision import cpu_has_bf16

    spec = {"models": list(models), "precisions": list(precisions), "modes": list(modes or TORCH_MODES),
            "size": list(settings.train_size), "batch": settings.batch_size, "classes": int(num_classes),
            "steps": settings.steps, "repeats": settings.repeats, "warmup": 1 if settings.quick else 2,
            "native_bf16": cpu_has_bf16()}
    return run_in_child(f"{TORCH_REFERENCE}:run_reference", spec, what="PyTorch reference", timeout=timeout)


