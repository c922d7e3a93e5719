"""The benchmark's training measurements: images/s of segcli's train path (`train_path_rate`) and of a bare
model.fit on one cached batch (`fit_rates`), and the loss curves of a recipe in float32 and in the reduced
policy (`precision_curves`); with what they train: the recipe (`resolved_recipe`), the net (`fit_model`) and
the batches (`random_batch`, `cached_batches`, `indexed_batches`). Plain functions, for the sections and for
the scripts in benchmarks/. They run on the active Keras backend; TensorFlow is imported only inside them and
only on the TensorFlow backend (tf.data feeds the fits there).
"""

from __future__ import annotations

import math
import shutil
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Callable

from segcli.bench import settings as bench_settings
from segcli.bench.data import VAL_FRACTION, BenchData, precision_data
from segcli.bench.settings import BenchSettings, bench_model
from segcli.bench.timing import free_memory, median_after_first
from segcli.backend import set_seed
from segcli.errors import SegcliError


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

