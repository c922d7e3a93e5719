"""The benchmark's sections, one function each, and `run_bench`, which runs them in the order of `SECTION_TABLE`
(the names `--skip` takes).

Each section takes the `BenchRun` (settings, choices, working folder, the result so far) and adds its figures
to `run.result`. The measurements they make (`matmul_gflops`, `train_path_rate`, `fit_rates`, ...) are
plain functions too, for scripts in benchmarks/. They run on the active Keras backend (keras.ops, device
tensors); TensorFlow is imported only inside them and only on the TensorFlow backend (tf.data feeds the fits
there, as it always did). A section that cannot run on the backend (or without PyTorch, for `torch`) says why
in result["unavailable"] (`BenchRun.attempt`).
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

from segcli.bench import settings as bench_settings
from segcli.bench.child import run_in_child
from segcli.bench.data import ROOT, BenchData, VAL_FRACTION, precision_data, prepare_data, write_big_image
from segcli.bench.settings import (COMPUTE_DTYPE, DEFAULT_MODELS, BenchSettings, bench_model, check_choices,
                                   make_settings)
from segcli.bench.timing import free_memory, median_after_first, peak_fraction, time_calls
from segcli.backend import set_seed
from segcli.errors import SegcliError, first_line
from segcli.sizes import round_up

Progress = Callable[[str], None]


# --- measurements ------------------------------------------------------------------------------------

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


def cached_batches(images, labels) -> Callable[[], object]:
    """What model.fit reads when it trains on one cached batch: a function that gives, at each call (each fit),
    an endless stream of the same (images, labels) held on the device, with no host copy per step. TensorFlow:
    tf.data.Dataset.from_tensors(...).repeat() (as the benchmark always fed it); jax and torch: a generator of
    the two device tensors (Keras passes jax arrays and torch tensors through; NumPy arrays would be copied to
    the device at every step)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        ds = tf.data.Dataset.from_tensors((tf.constant(images), tf.constant(labels))).repeat()
        return lambda: ds
    x, y = keras.ops.convert_to_tensor(images), keras.ops.convert_to_tensor(labels)

    def batches():
        while True:
            yield x, y

    return batches


def indexed_batches(images, labels, rows) -> Callable[[], object]:
    """A function that gives, at each call (each fit), the batches images[row], labels[row] for each row of
    indices in order (float32, int32), gathered on the device from the whole set held there (uint8): on
    TensorFlow a tf.data map, elsewhere a generator of keras.ops.take."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        images_t, labels_t = tf.constant(images), tf.constant(labels)
        ds = tf.data.Dataset.from_tensor_slices(rows).map(
            lambda idx: (tf.cast(tf.gather(images_t, idx), tf.float32), tf.cast(tf.gather(labels_t, idx), tf.int32)))
        return lambda: ds
    ops = keras.ops
    images_t, labels_t = ops.convert_to_tensor(images), ops.convert_to_tensor(labels)

    def batches():
        for row in rows:
            idx = ops.convert_to_tensor(row)
            yield ops.cast(ops.take(images_t, idx, axis=0), "float32"), ops.cast(ops.take(labels_t, idx, axis=0),
                                                                                   "int32")

    return batches


def _recipe_parts(model_name: str, precision: str, settings: BenchSettings, jit: bool):
    """(recipe file or None, overrides): the model's shipped recipe when there is one, the tutorial's data
    settings at the benchmark's size, one held-out val pair, `settings.epochs` epochs."""
    from segcli import recipe as recipes

    base, options = bench_model(model_name)
    try:
        recipe_file = recipes.find_recipe(base)
    except SegcliError:
        recipe_file = None
    overrides = {
        "model": {"options": options},  # MODEL:ENCODER
        "data": {"size": list(settings.train_size), "short_side": list(settings.short_side), "center_crop": True,
                 "flip": False, "void_as_class": True, "cache": "auto",
                 # one pair held out as val (train's curves need val figures); val time is not counted
                 "val_fraction": VAL_FRACTION, "eval_short_side": int(settings.short_side[0]),
                 "eval_crop": list(settings.train_size)},
        "train": {"epochs": int(settings.epochs), "batch_size": int(settings.batch_size), "precision": precision,
                  "jit": "true" if jit else "false", "max_minutes": 0.0,
                  "distribute": "none"},  # one device: the figures compare with the tutorial's one GPU
    }
    return recipe_file, overrides


def build_bench_model(model_name: str, num_classes: int):
    """The net a benchmark model name stands for (settings.bench_model: MODEL or MODEL:ENCODER), random init."""
    from segcli.models import build_model

    base, options = bench_model(model_name)
    return build_model(base, num_classes, **options)


def resolved_recipe(model_name: str, precision: str, settings: BenchSettings, jit: bool):
    """The segcli.recipe.Recipe the train path trains `model_name` with."""
    from segcli import recipe as recipes

    recipe_file, overrides = _recipe_parts(model_name, precision, settings, jit)
    return recipes.resolve_for_model(bench_model(model_name)[0], recipe_file, overrides)[0]


def train_path_rate(model_name: str, precision: str, data: BenchData, settings: BenchSettings, jit: bool,
                    workdir: str | Path) -> dict:
    """Images/s of `segcli.training.train` (median over the epochs after the first) and what it trained."""
    from segcli.training import train

    recipe_file, overrides = _recipe_parts(model_name, precision, settings, jit)
    out = Path(workdir) / f"run-{model_name.replace(':', '-')}-{precision}"
    result = train(bench_model(model_name)[0], data.root, recipe_file=recipe_file, overrides=overrides, out=out,
                   force=True, classes_file=data.root / "classes.json")  # fit_rates' classes, whatever the recipe says
    rates = [float(row["images_per_sec"]) for row in result.history[1:] or result.history]
    rate = statistics.median(rates)
    shutil.rmtree(out, ignore_errors=True)
    free_memory()
    return {"images_per_sec": rate, "epochs_images_per_sec": rates, "classes": len(result.metrics["classes"]),
            "epochs": int(result.metrics["epochs"])}


def random_batch(batch: int, size, num_classes: int, seed: int = 0):
    """The benchmark's one training batch: (images float32 0..255 (batch, h, w, 3), labels int32 (batch, h, w))
    as NumPy arrays, the same for every run with the same seed."""
    import numpy as np

    rng = np.random.default_rng(seed)
    h, w = size
    return (rng.uniform(0, 255, (batch, h, w, 3)).astype(np.float32),
            rng.integers(0, num_classes, (batch, h, w)).astype(np.int32))


def fit_model(model_name: str, precision: str, settings: BenchSettings, jit: bool, classes=None):
    """(model, recipe, classes, strategy): the net a bare fit of `model_name` trains, built as `segcli train`
    builds it (its recipe, seed, strategy scope and precision policy), not yet compiled. classes: the model's
    ClassMap (default CamVid's 11 + void trained as a class, as the benchmark's recipe trains it)."""
    from segcli.data import camvid_classes
    from segcli.models import build_model
    from segcli.precision import policy
    from segcli.training.distribute import resolve_strategy

    recipe = resolved_recipe(model_name, precision, settings, jit)
    classes = classes or camvid_classes().with_void_as_class()
    set_seed(recipe.train.seed)
    strategy, _ = resolve_strategy(recipe.train.distribute)
    with strategy.scope(), policy(precision):
        model = build_model(recipe.model.name, classes.num_classes, **recipe.model.options)
    return model, recipe, classes, strategy


def fit_rates(model_name: str, precision: str, settings: BenchSettings, jit: bool, classes=None) -> dict:
    """Images/s of a bare model.fit on one cached batch, the median of `settings.repeats` timed fits: compiled
    by segcli.training.compile_for_training as train compiles (optimizer, loss, metrics with the scoring rules,
    jit, steps per execution) -> "fit"; the loss only -> "fit_plain". classes: as fit_model's."""
    from segcli.training.callbacks import Throughput
    from segcli.training.compile import compile_for_training

    model, recipe, classes, strategy = fit_model(model_name, precision, settings, jit, classes)
    batch, steps = int(settings.batch_size), int(settings.steps)
    data = cached_batches(*random_batch(batch, settings.train_size, classes.num_classes))
    rates = {}
    for variant, with_metrics in (("fit", True), ("fit_plain", False)):
        spe = compile_for_training(model, recipe, classes, steps, strategy=strategy, metrics=with_metrics,
                                   gpu=bench_settings.gpu_available()).steps_per_execution
        model.fit(data(), steps_per_epoch=max(2, spe), epochs=1, verbose=0, shuffle=False)  # tracing, first steps
        history = model.fit(data(), steps_per_epoch=steps, epochs=settings.repeats, verbose=0, shuffle=False,
                            callbacks=[Throughput(batch)])
        rates[variant] = statistics.median(float(r) for r in history.history["images_per_sec"])
        rates[f"{variant}_epochs"] = [float(r) for r in history.history["images_per_sec"]]
    del model, data
    free_memory()
    return rates


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
        result = run_in_child("segcli.bench.sections:tiled_child", spec, what="tiled predict", timeout=timeout)
    finally:
        image.unlink(missing_ok=True)
        shutil.rmtree(workdir / "tiled-out", ignore_errors=True)
    return {"model": model_name, "size": [settings.tiled_size, settings.tiled_size], "tile": settings.tile,
            "overlap": settings.overlap, "batch": settings.tiled_batch, **result}


def precision_curves(settings: BenchSettings, data: str | Path | None, workdir: str | Path,
                     gpu: bool | None = None) -> dict:
    """Train `settings.precision_recipe` for `precision_steps` steps in float32 and in the device's reduced
    policy (mixed_bfloat16 on a CPU, mixed_float16 on a GPU): the same initial weights, the same batches in
    the same order (in memory, no augmentation), the recipe's optimizer, loss and learning-rate schedule
    (its epochs counted over these images; class weights left out). Returns both loss curves (each point
    the mean training loss of steps / points steps), their ratio (reduced / float32), images/s of each, the
    CPU, its bf16 kind and what `--precision auto` picks on it."""
    import numpy as np

    from segcli import recipe as recipes
    from segcli.models import build_model, output_stride
    from segcli.precision import cpu_bf16, policy, resolve_precision
    from segcli.system import cpu_name
    from segcli.training.callbacks import Throughput
    from segcli.training.compile import compile_for_training

    gpu = bench_settings.gpu_available() if gpu is None else gpu
    recipe = recipes.resolve(recipes.find_recipe(settings.precision_recipe))
    data_cfg, train_cfg, model_cfg = recipe.data, recipe.train, recipe.model
    batch = int(settings.precision_batch or train_cfg.batch_size)
    settings = replace(settings, precision_batch=batch)
    every = max(1, settings.precision_steps // max(1, settings.precision_points))
    points = max(1, settings.precision_steps // every)
    h, w = settings.precision_size
    images, labels, classes, source = precision_data(data, settings, workdir, data_cfg.void_as_class)
    seed = train_cfg.seed
    rng = np.random.default_rng(seed)
    need = points * every * batch
    order = np.concatenate([rng.permutation(len(images)) for _ in range(-(-need // len(images)))])[:need]
    batches = indexed_batches(images, labels, order.reshape(-1, batch).astype(np.int32))
    steps_per_epoch = max(1, len(images) // batch)  # the schedule: the recipe's epochs over these images

    policies = ("float32", bench_settings.default_precisions(gpu)[-1])
    curves, rates, initial = {}, {}, None
    for name in policies:
        set_seed(seed)
        with policy(name):
            model = build_model(model_cfg.name, classes.num_classes, **model_cfg.options)
        if initial is None:
            stride = output_stride(model)
            if h % stride or w % stride:
                raise SegcliError(f"precision section: the size {h}x{w} must divide by the output stride {stride} "
                                  f"of {settings.precision_recipe}")
            initial = model.get_weights()
        else:
            model.set_weights(initial)  # the variables of a mixed policy are float32: the very same weights
        compile_for_training(model, recipe, classes, steps_per_epoch, metrics=False, gpu=gpu)  # as train does
        history = model.fit(batches(), steps_per_epoch=every, epochs=points, verbose=0, shuffle=False,
                            callbacks=[Throughput(batch)])
        curves[name] = [float(v) for v in history.history["loss"]]
        rates[name] = median_after_first(history.history["images_per_sec"])  # the first window traces
        del model
        free_memory()
    ratio = [b / f if f else math.nan for f, b in zip(curves[policies[0]], curves[policies[1]])]
    auto, why = resolve_precision("auto")
    return {"recipe": settings.precision_recipe, "model": model_cfg.name, "cpu": cpu_name(),
            "cpu_bf16": cpu_bf16(), "auto": auto, "auto_reason": why, "data": source,
            "images": int(len(images)), "size": [h, w], "batch": batch, "steps": points * every,
            "every": every, "policies": list(policies), "steps_at": [every * (i + 1) for i in range(points)],
            "curves": curves, "ratio": ratio, "ratio_last": ratio[-1],
            "ratio_mean_last_half": statistics.fmean(ratio[len(ratio) // 2:]),
            "images_per_sec": rates}


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


# --- one run: what the sections share ----------------------------------------------------------------

@dataclass
class BenchRun:
    """What the sections of one run share: its settings and choices, the working folder, the result so far."""

    settings: BenchSettings
    models: tuple[str, ...]
    precisions: tuple[str, ...]
    jit: bool
    gpu: bool
    data: str | Path | None        # the caller's dataset (None: CamVid beside the checkout, else synthetic)
    workdir: Path
    skip: set[str]
    say: Progress
    result: dict
    backend: str = "tensorflow"    # the Keras backend (keras.backend.backend())
    _bench_data: BenchData | None = None
    _classes: object = None
    _gflops: dict = field(default_factory=dict)

    def attempt(self, name: str, measure: Callable, *args, **kwargs):
        """measure(*args, **kwargs), or None when section `name` cannot run here: it raised Unavailable, or (on
        jax and torch) an ImportError (what it needs imports TensorFlow); the reason is kept in
        result["unavailable"][name] and the later measurements of that section are not tried."""
        unavailable = self.result.setdefault("unavailable", {})
        if name in unavailable:
            return None
        try:
            return measure(*args, **kwargs)
        except Unavailable as exc:
            reason = str(exc)
        except ImportError as exc:
            if self.backend == "tensorflow":
                raise
            what = exc.name or "a module"
            reason = (f"needs {what}, which the {self.backend} backend does not load"
                      if what.split(".")[0] == "tensorflow" else f"needs {what}: {first_line(exc)}")
        unavailable[name] = reason
        self.say(f"{name}: not run: {reason}")
        return None

    def configurations(self):
        """(model, precision) in the order the tables list them."""
        return [(name, precision) for name in self.models for precision in self.precisions]

    def bench_data(self) -> BenchData:
        """The train path's and the pipeline's dataset (steps x batch training pairs + one val pair), prepared
        on first use and described in result["data"]."""
        if self._bench_data is None:
            from segcli.data import load_classes

            s = self.settings
            pairs = s.steps * s.batch_size + 1  # + the one val pair of the train path
            self.say(f"data: {pairs} training pairs")
            self._bench_data = prepare_data(self.data, pairs, self.workdir, s.synthetic_size)
            self._classes = load_classes(self._bench_data.root / "classes.json").with_void_as_class()
            self.result["data"] = {"source": self._bench_data.source, "train_pairs": self._bench_data.pairs - 1,
                                   "val_pairs": 1, "classes": self._classes.num_classes,
                                   "classes_note": self._bench_data.classes_note}
        return self._bench_data

    @property
    def classes(self):
        """The ClassMap the nets are built for: the benchmark data's (void as a class) when a section reads
        that data; None (CamVid's 11 + void, fit_rates' default) when train and pipeline are both skipped."""
        if not {"train", "pipeline"} <= self.skip:
            self.bench_data()
        return self._classes

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes if self.classes is not None else 12

    def gflops(self, model_name: str) -> float:
        """GFLOPs per training crop of `model_name` (segcli.models.gflops), once per model."""
        if model_name not in self._gflops:
            from segcli.models import gflops

            self._gflops[model_name] = gflops(build_bench_model(model_name, self.num_classes),
                                              *self.settings.train_size)
        return self._gflops[model_name]

    def peak(self, precision: str) -> float | None:
        """The matmul peak of the precision's compute dtype (None when the matmul section is skipped)."""
        return self.result.get("matmul_gflops", {}).get(COMPUTE_DTYPE[precision])


# --- the sections --------------------------------------------------------------------------------------

def matmul(run: BenchRun) -> None:
    """Peak matmul GFLOP/s per compute dtype: float32, bfloat16 and those of the precisions."""
    n = run.settings.matmul_n
    peaks = {}
    for dtype in dict.fromkeys(["float32", "bfloat16"] + [COMPUTE_DTYPE[p] for p in run.precisions]):
        run.say(f"matmul {dtype} {n}x{n}")
        peaks[dtype] = matmul_gflops(dtype, n, run.settings.min_seconds)
    run.result["matmul_gflops"] = peaks


def pipeline(run: BenchRun) -> None:
    """The input pipeline's images/s alone: tf.data and the NumPy loader on TensorFlow, the loader elsewhere."""
    engines, note = pipeline_engines()
    data = run.bench_data()
    rates = {}
    for engine in engines:
        run.say(f"pipeline: {engine}")
        rates[engine] = pipeline_rate(data, run.settings, engine)
    run.result["pipeline_images_per_sec"] = rates
    if note:
        run.result["pipeline_note"] = note


def training(run: BenchRun) -> None:
    """Sections train and fit: per model and precision, images/s of segcli's train path and of a bare
    model.fit, back to back (their ratio is segcli's overhead; a slow spell of a shared CPU then hits both),
    each with its share of the matmul peak. Either may be unavailable on a backend (result["unavailable"])."""
    rows = []
    for name, precision in run.configurations():
        row = {"model": name, "precision": precision, "gflops_per_image": run.gflops(name)}
        if "train" not in run.skip and "train" not in run.result.get("unavailable", {}):
            run.say(f"train path: {name} {precision}")
            path = run.attempt("train", lambda: train_path_rate(name, precision, run.bench_data(), run.settings,
                                                                run.jit, run.workdir))
            if path is not None:
                row["train_images_per_sec"] = path["images_per_sec"]
                row["train_epochs_images_per_sec"] = path["epochs_images_per_sec"]
        if "fit" not in run.skip and "fit" not in run.result.get("unavailable", {}):
            run.say(f"bare fit: {name} {precision}")
            fits = run.attempt("fit", fit_rates, name, precision, run.settings, run.jit, run.classes)
            if fits is not None:
                row["fit_images_per_sec"] = fits["fit"]
                row["fit_plain_images_per_sec"] = fits["fit_plain"]
                row["fit_epochs_images_per_sec"] = fits["fit_epochs"]
        if "train_images_per_sec" in row and "fit_images_per_sec" in row:
            row["train_over_fit"] = row["train_images_per_sec"] / row["fit_images_per_sec"]
        for key in ("train", "fit", "fit_plain"):
            share = peak_fraction(row["gflops_per_image"], row.get(f"{key}_images_per_sec"), run.peak(precision))
            if share is not None:
                row[f"{key}_peak_fraction"] = share
        rows.append(row)
    if any(k.endswith("_images_per_sec") for row in rows for k in row):
        run.result["training"] = rows


def predict(run: BenchRun) -> None:
    """model.predict_on_batch images/s per model and precision."""
    out = []
    for name, precision in run.configurations():
        run.say(f"predict: {name} {precision}")
        rate = predict_rate(name, precision, run.settings, run.jit, run.num_classes)
        out.append({"model": name, "precision": precision, "size": list(run.settings.predict_size),
                    "batch": run.settings.predict_batch, **rate})
    run.result["predict"] = out


def tiled(run: BenchRun) -> None:
    """The peak resident memory of a tiled predict_files on one large image, in a child process."""
    s = run.settings
    name = "lambda-unet" if "lambda-unet" in run.models else run.models[0]
    run.say(f"tiled predict: {s.tiled_size}x{s.tiled_size}, {name}, child process")
    run.result["tiled"] = tiled_predict_memory(name, s, run.workdir, run.num_classes)


def precision(run: BenchRun) -> None:
    """Loss curves of a CamVid recipe in float32 and in the device's reduced policy, from the same weights."""
    run.say(f"precision: {run.settings.precision_recipe}, {run.settings.precision_steps} steps in float32 and in "
            f"{bench_settings.default_precisions(run.gpu)[-1]}")
    run.result["precision"] = precision_curves(run.settings, run.data, run.workdir, run.gpu)


def torch_reference(run: BenchRun) -> None:
    """The PyTorch reference of the lambda nets (benchmarks/torch_reference.py) trained on one cached batch as
    the bare fit is, eager and torch.compile'd, in a child process; beside segcli's train and fit figures."""
    run.say(f"PyTorch reference: {', '.join(run.models)}, {' and '.join(TORCH_MODES)}, child process"
            + (" (compiling takes a while)" if "compiled" in TORCH_MODES else ""))
    ref = torch_reference_rates(run.models, run.precisions, run.settings, run.num_classes)
    segcli_rows = {(r["model"], r["precision"]): r for r in run.result.get("training", [])}
    compare = []
    for name, precision in run.configurations():
        ours = segcli_rows.get((name, precision), {})
        row = {"model": name, "precision": precision}
        for key in ("train_images_per_sec", "fit_images_per_sec", "fit_plain_images_per_sec"):
            if key in ours:
                row[key] = ours[key]
        for r in ref["rows"]:
            if (r["model"], r["precision"]) != (name, precision):
                continue
            mode = r["mode"]
            if "images_per_sec" in r:
                row[f"torch_{mode}_images_per_sec"] = r["images_per_sec"]
                if mode == "compiled":
                    row["torch_compile_seconds"] = r["first_step_seconds"]
                if "fit_plain_images_per_sec" in row:
                    row[f"fit_plain_over_torch_{mode}"] = row["fit_plain_images_per_sec"] / r["images_per_sec"]
            else:
                row.setdefault("torch_notes", []).append(f"{mode}: {r.get('skipped') or r.get('error')}")
        fastest = max((row.get(f"torch_{mode}_images_per_sec") or 0 for mode in TORCH_MODES), default=0)
        if fastest and "fit_plain_images_per_sec" in row:
            row["fit_plain_over_torch"] = row["fit_plain_images_per_sec"] / fastest  # over the faster torch mode
        compare.append(row)
    run.result["torch"] = {**ref, "compare": compare}


# name -> section, in the order they run; train and fit share one loop (see `training`); torch compares with them
SECTION_TABLE: dict[str, Callable[[BenchRun], None]] = {
    "matmul": matmul, "pipeline": pipeline, "train": training, "fit": training, "torch": torch_reference,
    "predict": predict, "tiled": tiled, "precision": precision,
}
SECTIONS = tuple(SECTION_TABLE)


# --- the whole benchmark -----------------------------------------------------------------------------

def run_bench(*, quick: bool = False, data: str | Path | None = None, models: Iterable[str] = DEFAULT_MODELS,
              precisions: Iterable[str] | None = None, steps: int | None = None, jit=None,
              predict_batch: int | None = None, skip: Iterable[str] = (), workdir: str | Path | None = None,
              precision_steps: int | None = None, batch_size: int | None = None, size: tuple[int, int] | None = None,
              progress: Progress | None = None) -> dict:
    """Run the benchmark sections (all but `skip`) and return the figures as a JSON-ready dict.

    quick: tiny sizes (64x64 crops, batch 4, 3 steps, a 1024^2 tiled predict with 256 tiles, 512^2 matmul; the
    PyTorch reference at 64x64 too, though torch.compile still takes seconds to a minute per net); the precision
    section only when precision_steps is given.
    precisions: default float32 + mixed_float16 with a GPU, float32 + mixed_bfloat16 without.
    jit: None/"auto" = on with a GPU (always on jax, whose eager mode runs op by op). data: dataset folder for the
    train path and the pipeline (default ../shared/data/camvid, else synthetic PNGs). precision_steps: the precision
    section's training steps (default 200). batch_size, size (height, width): the training batch and crop
    (default the tutorial's 16 and 368x480). progress(message) is called before each measurement.
    """
    from segcli.models import output_stride
    from segcli.system import hardware_summary

    models = tuple(models)
    skip = {s.strip() for s in skip if s and s.strip()}
    if quick and precision_steps is None:
        skip.add("precision")  # two CamVid-recipe models to trace: about a minute even at tiny sizes
    backend = backend_info()
    gpu = bench_settings.gpu_available()
    precisions = tuple(precisions) if precisions else bench_settings.default_precisions(gpu)
    check_choices(models, precisions, skip, SECTIONS)
    jit = bench_settings._parse_jit(jit)
    jit = bench_settings.default_jit(gpu, backend["backend"]) if jit is None else jit
    settings = make_settings(quick=quick, gpu=gpu, steps=steps, predict_batch=predict_batch,
                             precision_steps=precision_steps, batch_size=batch_size, size=size)
    if data is not None and not Path(data).exists():
        raise SegcliError("no such file or directory", data)
    for name in models:
        stride = output_stride(build_bench_model(name, 12))
        if any(s % stride for s in settings.train_size):
            raise SegcliError(f"model {name}: the training size {settings.train_size[0]}x{settings.train_size[1]} "
                              f"(--size) must divide by its output stride {stride}")

    result: dict = {
        "quick": quick,
        "system": {"hardware": hardware_summary(), **backend, "python": platform.python_version(),
                   "cpu_count": os.cpu_count(), "gpu": gpu, "jit": jit},
        "settings": settings.to_dict(),
        "models": list(models), "precisions": list(precisions), "skipped": sorted(skip),
    }
    # Always a folder of our own (inside `workdir` when given): the sections replace and delete what they put
    # in it (data/, run-*/, tiled-out/), which must never be a caller's files of the same names.
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="segcli-bench-", dir=workdir))
    run = BenchRun(settings=settings, models=models, precisions=precisions, jit=jit, gpu=gpu, data=data,
                   workdir=workdir, skip=skip, say=progress or (lambda message: None), result=result,
                   backend=backend["backend"])
    try:
        done = []
        for name, section in SECTION_TABLE.items():
            if name not in skip and section not in done:
                done.append(section)
                run.attempt(name, section, run)
        if not result.get("unavailable"):
            result.pop("unavailable", None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return result
