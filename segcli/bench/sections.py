"""The benchmark's sections, one function each, and `run_bench`, which runs them in the order of `SECTION_TABLE`
(the names `--skip` takes).

Each section takes the `BenchRun` (settings, choices, working folder, the result so far) and adds its figures
to `run.result`. The measurements they make (`matmul_gflops`, `train_path_rate`, `fit_rates`, ...) are
plain functions too, for scripts in benchmarks/. TensorFlow is imported only inside them.
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
from segcli.bench.data import BenchData, VAL_FRACTION, precision_data, prepare_data, write_big_image
from segcli.bench.settings import COMPUTE_DTYPE, DEFAULT_MODELS, BenchSettings, check_choices, make_settings
from segcli.bench.timing import free_memory, median_after_first, peak_fraction, time_calls
from segcli.errors import SegcliError
from segcli.sizes import round_up

Progress = Callable[[str], None]


# --- measurements ------------------------------------------------------------------------------------

def matmul_gflops(dtype: str = "float32", n: int = 2048, min_seconds: float = 2.0) -> float:
    """GFLOP/s of tf.linalg.matmul of two n x n matrices of `dtype` (2 n^3 per product), after a warm-up."""
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(0)
    a = tf.cast(rng.normal((n, n)), dtype)
    b = tf.cast(rng.normal((n, n)), dtype)
    chunk = 4  # products queued between syncs (a GPU runs them asynchronously; reading one value waits)

    def run():
        c = None
        for _ in range(chunk):
            c = tf.linalg.matmul(a, b)
        return c[0, 0].numpy()

    calls, seconds = time_calls(run, warmup=1, min_calls=2, min_seconds=min_seconds)
    return 2.0 * n ** 3 * chunk * calls / seconds / 1e9


def _recipe_parts(model_name: str, precision: str, settings: BenchSettings, jit: bool):
    """(recipe file or None, overrides): the model's shipped recipe when there is one, the tutorial's data
    settings at the benchmark's size, one held-out val pair, `settings.epochs` epochs."""
    from segcli import recipe as recipes

    try:
        recipe_file = recipes.find_recipe(model_name)
    except SegcliError:
        recipe_file = None
    overrides = {
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


def resolved_recipe(model_name: str, precision: str, settings: BenchSettings, jit: bool):
    """The segcli.recipe.Recipe the train path trains `model_name` with."""
    from segcli import recipe as recipes

    recipe_file, overrides = _recipe_parts(model_name, precision, settings, jit)
    return recipes.resolve_for_model(model_name, recipe_file, overrides)[0]


def train_path_rate(model_name: str, precision: str, data: BenchData, settings: BenchSettings, jit: bool,
                    workdir: str | Path) -> dict:
    """Images/s of `segcli.training.train` (median over the epochs after the first) and what it trained."""
    from segcli.training import train

    recipe_file, overrides = _recipe_parts(model_name, precision, settings, jit)
    out = Path(workdir) / f"run-{model_name}-{precision}"
    result = train(model_name, data.root, recipe_file=recipe_file, overrides=overrides, out=out, force=True,
                   classes_file=data.root / "classes.json")  # the classes fit_rates uses, whatever the recipe says
    rates = [float(row["images_per_sec"]) for row in result.history[1:] or result.history]
    rate = statistics.median(rates)
    shutil.rmtree(out, ignore_errors=True)
    free_memory()
    return {"images_per_sec": rate, "epochs_images_per_sec": rates, "classes": len(result.metrics["classes"]),
            "epochs": int(result.metrics["epochs"])}


def fit_rates(model_name: str, precision: str, settings: BenchSettings, jit: bool, classes=None) -> dict:
    """Images/s of a bare model.fit on one cached batch, the median of `settings.repeats` timed fits: compiled
    by segcli.training.compile_for_training as train compiles (optimizer, loss, metrics with the scoring rules,
    jit, steps per execution) -> "fit"; the loss only -> "fit_plain". classes: the model's ClassMap (default
    CamVid's 11 + void trained as a class, as the benchmark's recipe trains it)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from segcli.data import camvid_classes
    from segcli.models import build_model
    from segcli.precision import policy
    from segcli.training.callbacks import Throughput
    from segcli.training.compile import compile_for_training
    from segcli.training.distribute import resolve_strategy

    recipe = resolved_recipe(model_name, precision, settings, jit)
    classes = classes or camvid_classes().with_void_as_class()
    num_classes = classes.num_classes
    keras.utils.set_random_seed(recipe.train.seed)
    strategy, _ = resolve_strategy(recipe.train.distribute)
    batch, steps = int(settings.batch_size), int(settings.steps)
    h, w = settings.train_size
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (batch, h, w, 3)).astype(np.float32))
    labels = tf.constant(rng.integers(0, num_classes, (batch, h, w)).astype(np.int32))
    ds = tf.data.Dataset.from_tensors((images, labels)).repeat()
    with strategy.scope(), policy(precision):
        model = build_model(model_name, num_classes, **recipe.model.options)
    rates = {}
    for variant, with_metrics in (("fit", True), ("fit_plain", False)):
        spe = compile_for_training(model, recipe, classes, steps, strategy=strategy, metrics=with_metrics,
                                   gpu=bench_settings.gpu_available()).steps_per_execution
        model.fit(ds, steps_per_epoch=max(2, spe), epochs=1, verbose=0, shuffle=False)  # tracing, first steps
        history = model.fit(ds, steps_per_epoch=steps, epochs=settings.repeats, verbose=0, shuffle=False,
                            callbacks=[Throughput(batch)])
        rates[variant] = statistics.median(float(r) for r in history.history["images_per_sec"])
        rates[f"{variant}_epochs"] = [float(r) for r in history.history["images_per_sec"]]
    del model, ds, images, labels
    free_memory()
    return rates


def pipeline_rate(data: BenchData, settings: BenchSettings) -> float:
    """Images/s of the training input pipeline alone (train's augmentation: short-side resize, centre crop)."""
    from segcli.data import Augment, open_dataset, pipeline_throughput

    dataset = open_dataset(data.root, val_fraction=0.0)
    augment = Augment(short_side=tuple(settings.short_side), crop=tuple(settings.train_size), center_crop=True,
                      flip=False)
    return float(pipeline_throughput(dataset.splits["train"], dataset.classes, dataset.encoding,
                                     batch_size=settings.batch_size, batches=settings.pipeline_batches,
                                     augment=augment, void_as_class=True))


def predict_rate(model_name: str, precision: str, settings: BenchSettings, jit: bool, num_classes: int = 12) -> dict:
    """Images/s of model.predict_on_batch on (batch, H, W, 3), H x W padded up to the output stride
    (as `segcli predict` pads)."""
    import numpy as np

    from segcli.models import build_model, output_stride
    from segcli.precision import policy

    with policy(precision):
        model = build_model(model_name, num_classes)
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
    import keras

    from segcli.data import default_classes
    from segcli.inference import predict_files
    from segcli.modelfile import LoadedModel
    from segcli.models import build_model, output_stride
    from segcli.system import peak_rss_mb

    keras.utils.set_random_seed(0)
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
    spec = {"model": model_name, "classes": num_classes, "image": str(image), "out": str(workdir / "tiled-out"),
            "tile": settings.tile, "overlap": settings.overlap, "batch": settings.tiled_batch}
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
    import keras
    import numpy as np
    import tensorflow as tf

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
    images_t, labels_t = tf.constant(images), tf.constant(labels)
    ds = tf.data.Dataset.from_tensor_slices(order.reshape(-1, batch).astype(np.int32)).map(
        lambda idx: (tf.cast(tf.gather(images_t, idx), tf.float32), tf.cast(tf.gather(labels_t, idx), tf.int32)))
    steps_per_epoch = max(1, len(images) // batch)  # the schedule: the recipe's epochs over these images

    policies = ("float32", bench_settings.default_precisions(gpu)[-1])
    curves, rates, initial = {}, {}, None
    for name in policies:
        keras.utils.set_random_seed(seed)
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
        history = model.fit(ds, steps_per_epoch=every, epochs=points, verbose=0, shuffle=False,
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
    _bench_data: BenchData | None = None
    _classes: object = None
    _gflops: dict = field(default_factory=dict)

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
            from segcli.models import build_model, gflops

            self._gflops[model_name] = gflops(build_model(model_name, self.num_classes), *self.settings.train_size)
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
    """The input pipeline's images/s alone."""
    data = run.bench_data()
    run.say("pipeline")
    run.result["pipeline_images_per_sec"] = pipeline_rate(data, run.settings)


def training(run: BenchRun) -> None:
    """Sections train and fit: per model and precision, images/s of segcli's train path and of a bare
    model.fit, back to back (their ratio is segcli's overhead; a slow spell of a shared CPU then hits both),
    each with its share of the matmul peak."""
    rows = []
    for name, precision in run.configurations():
        row = {"model": name, "precision": precision, "gflops_per_image": run.gflops(name)}
        if "train" not in run.skip:
            run.say(f"train path: {name} {precision}")
            path = train_path_rate(name, precision, run.bench_data(), run.settings, run.jit, run.workdir)
            row["train_images_per_sec"] = path["images_per_sec"]
            row["train_epochs_images_per_sec"] = path["epochs_images_per_sec"]
        if "fit" not in run.skip:
            run.say(f"bare fit: {name} {precision}")
            fits = fit_rates(name, precision, run.settings, run.jit, run.classes)
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


# name -> section, in the order they run; train and fit share one loop (see `training`)
SECTION_TABLE: dict[str, Callable[[BenchRun], None]] = {
    "matmul": matmul, "pipeline": pipeline, "train": training, "fit": training, "predict": predict,
    "tiled": tiled, "precision": precision,
}
SECTIONS = tuple(SECTION_TABLE)


# --- the whole benchmark -----------------------------------------------------------------------------

def run_bench(*, quick: bool = False, data: str | Path | None = None, models: Iterable[str] = DEFAULT_MODELS,
              precisions: Iterable[str] | None = None, steps: int | None = None, jit=None,
              predict_batch: int | None = None, skip: Iterable[str] = (), workdir: str | Path | None = None,
              precision_steps: int | None = None, progress: Progress | None = None) -> dict:
    """Run the benchmark sections (all but `skip`) and return the figures as a JSON-ready dict.

    quick: tiny sizes (64x64 crops, batch 4, 3 steps, a 1024^2 tiled predict with 256 tiles, 512^2 matmul);
    the precision section only when precision_steps is given.
    precisions: default float32 + mixed_float16 with a GPU, float32 + mixed_bfloat16 without.
    jit: None/"auto" = on with a GPU. data: dataset folder for the train path and the pipeline (default
    ../shared/data/camvid, else synthetic PNGs). precision_steps: the precision section's training steps
    (default 200). progress(message) is called before each measurement.
    """
    import keras
    import tensorflow as tf

    from segcli.models import build_model, output_stride
    from segcli.system import hardware_summary

    models = tuple(models)
    skip = {s.strip() for s in skip if s and s.strip()}
    if quick and precision_steps is None:
        skip.add("precision")  # two CamVid-recipe models to trace: about a minute even at tiny sizes
    gpu = bench_settings.gpu_available()
    precisions = tuple(precisions) if precisions else bench_settings.default_precisions(gpu)
    check_choices(models, precisions, skip, SECTIONS)
    jit = bench_settings._parse_jit(jit)
    jit = bench_settings.default_jit(gpu) if jit is None else jit
    settings = make_settings(quick=quick, gpu=gpu, steps=steps, predict_batch=predict_batch,
                             precision_steps=precision_steps)
    if data is not None and not Path(data).exists():
        raise SegcliError("no such file or directory", data)
    for name in models:
        stride = output_stride(build_model(name, 12))
        if any(s % stride for s in settings.train_size):
            raise SegcliError(f"model {name}: the training size {settings.train_size[0]}x{settings.train_size[1]} "
                              f"must divide by its output stride {stride}")

    result: dict = {
        "quick": quick,
        "system": {"hardware": hardware_summary(), "tensorflow": tf.__version__, "keras": keras.__version__,
                   "python": platform.python_version(), "cpu_count": os.cpu_count(), "gpu": gpu, "jit": jit},
        "settings": settings.to_dict(),
        "models": list(models), "precisions": list(precisions), "skipped": sorted(skip),
    }
    own_dir = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="segcli-bench-")) if own_dir else Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run = BenchRun(settings=settings, models=models, precisions=precisions, jit=jit, gpu=gpu, data=data,
                   workdir=workdir, skip=skip, say=progress or (lambda message: None), result=result)
    try:
        done = []
        for name, section in SECTION_TABLE.items():
            if name not in skip and section not in done:
                done.append(section)
                section(run)
    finally:
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)
    return result
