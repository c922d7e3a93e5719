"""`segcli bench`: how fast this machine trains and predicts, and where the time goes.

Sections (each can be skipped by name; `SECTIONS`, in the order they run):

- ``matmul``: peak matmul GFLOP/s per compute dtype (float32, bfloat16; float16 with mixed_float16), keras.ops;
- ``pipeline``: the input pipeline's images/s alone (``pipeline_throughput``): tf.data and the NumPy loader on
  TensorFlow, the loader on jax and torch;
- ``train``: training images/s through the real ``segcli.training.train`` path (PNG files, augmentation,
  metrics, callbacks), the median of the run's epochs after the first;
- ``fit``: a bare ``model.fit`` of the same model, compiled the same way, on one cached in-memory batch
  (with the loss + metrics train uses, and with the loss only), the median of ``repeats`` timed fits;
  ``train`` / ``fit`` is segcli's overhead;
- ``torch``: a PyTorch reference of the lambda nets (benchmarks/torch_reference.py: the same layers, loss and
  optimizer on one cached batch), eager and ``torch.compile``d, in a child process, beside ``fit``;
- ``predict``: ``model.predict_on_batch`` images/s at 360x480 (padded to the output stride);
- ``tiled``: the peak resident memory of ``predict_files`` on one 8000x8000 image, in a child process;
- ``precision``: a CamVid recipe (``camvid-fcn``) trained a few hundred steps from the same weights on the
  same batches in float32 and in the device's reduced policy (mixed_bfloat16 on a CPU): both loss curves and
  their ratio, with the CPU's bf16 kind and what ``--precision auto`` picks on it.

Every section runs on each Keras backend (KERAS_BACKEND=tensorflow, jax, torch; jax and torch never import
TensorFlow); one that cannot run on a backend, or a machine without PyTorch, says why in
result["unavailable"]. result["system"] names the backend and its version.

Every training figure also gets its share of the matmul peak of its compute dtype:
GFLOPs per image (segcli.models.gflops) x 3 (forward + backward) x images/s / peak GFLOP/s.

The modules: `settings` (what a run measures, full and --quick), `data` (CamVid or synthetic PNGs),
`timing` (the timing harness), `child` (the child-process protocol), `fitting` (the training measurements: the
train path, the bare fit, the precision curves), `measurements` (the others: matmul, pipeline, predict, tiled
predict, the PyTorch reference), `sections` (one function per section, `SECTION_TABLE`, `run_bench`). The result
is a plain dict; segcli/cli/render/bench.py prints it. Importing this package imports neither TensorFlow nor Keras
(benchmarks/bench_keras_backend.py runs without TensorFlow).

>>> from segcli.bench import run_bench
>>> result = run_bench(quick=True)          # a dict, as `segcli bench --json -` prints it
"""

from segcli.bench.child import run_in_child
from segcli.bench.data import (DEFAULT_DATA, VAL_FRACTION, BenchData, precision_data, prepare_data, write_big_image,
                               write_synthetic_dataset)
from segcli.bench.fitting import (cached_batches, fit_model, fit_rates, precision_curves, random_batch,
                                  resolved_recipe, train_path_rate)
from segcli.bench.measurements import (TORCH_MODES, Unavailable, backend_info, matmul_gflops, pipeline_rate,
                                       predict_rate, tiled_predict_memory, torch_reference_rates)
from segcli.bench.sections import SECTION_TABLE, SECTIONS, BenchRun, run_bench
from segcli.bench.settings import (COMPUTE_DTYPE, DEFAULT_MODELS, BenchSettings, default_jit, default_precisions,
                                   gpu_available, make_settings, parse_jit)
from segcli.bench.timing import median_after_first, peak_fraction, time_calls

__all__ = [
    "BenchData", "BenchRun", "BenchSettings", "COMPUTE_DTYPE", "DEFAULT_DATA", "DEFAULT_MODELS", "SECTIONS",
    "SECTION_TABLE", "TORCH_MODES", "Unavailable", "VAL_FRACTION", "backend_info", "cached_batches", "default_jit", "default_precisions", "fit_model", "fit_rates", "gpu_available",
    "make_settings", "matmul_gflops", "median_after_first", "parse_jit", "peak_fraction", "pipeline_rate",
    "precision_curves",
    "precision_data", "predict_rate", "prepare_data", "random_batch", "resolved_recipe", "run_bench", "run_in_child",
    "tiled_predict_memory", "time_calls", "torch_reference_rates", "train_path_rate", "write_big_image", "write_synthetic_dataset",
]
