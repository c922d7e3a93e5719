"""`segcli bench`: how fast this machine trains and predicts, and where the time goes.

Sections (each can be skipped by name):

- ``matmul``: peak matmul GFLOP/s per compute dtype (float32, bfloat16; float16 with mixed_float16);
- ``train``: training images/s through the real ``segcli.training.train`` path (PNG files, augmentation,
  metrics, callbacks), the median of the run's epochs after the first;
- ``fit``: a bare ``model.fit`` of the same model, compiled the same way, on one cached in-memory batch
  (with the loss + metrics train uses, and with the loss only), the median of ``repeats`` timed fits;
  ``train`` / ``fit`` is segcli's overhead;
- ``pipeline``: the input pipeline's images/s alone (``pipeline_throughput``);
- ``predict``: ``model.predict_on_batch`` images/s at 360x480 (padded to the output stride);
- ``tiled``: the peak resident memory of ``predict_files`` on one 8000x8000 image, in a child process;
- ``precision``: a CamVid recipe (``camvid-fcn``) trained a few hundred steps from the same weights on the
  same batches in float32 and in the device's reduced policy (mixed_bfloat16 on a CPU): both loss curves and
  their ratio, with the CPU's bf16 kind and what ``--precision auto`` picks on it.

Every training figure also gets its share of the matmul peak of its compute dtype:
GFLOPs per image (segcli.models.gflops) x 3 (forward + backward) x images/s / peak GFLOP/s.

>>> from segcli.bench import run_bench
>>> result = run_bench(quick=True)          # a dict, as `segcli bench --json -` prints it
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

from segcli.errors import SegcliError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "camvid"
DEFAULT_MODELS = ("lambda-fcn", "lambda-unet")
SECTIONS = ("matmul", "train", "fit", "pipeline", "predict", "tiled", "precision")
COMPUTE_DTYPE = {"float32": "float32", "mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}
_CHILD_FLAG = "--tiled-child"
_CHILD_MARK = "SEGCLI_BENCH_RESULT "
VAL_FRACTION = 1e-9  # open_dataset holds out at least one pair: exactly one here

Progress = Callable[[str], None]


# --- settings ---------------------------------------------------------------------------------------

@dataclass
class BenchSettings:
    """Sizes and lengths of one benchmark run; `full()` is the tutorial's setting, `quick_settings()` a smoke test."""

    train_size: tuple[int, int] = (368, 480)   # training crop (the tutorial's)
    short_side: tuple[int, int] = (400, 600)   # random short-side resize before the centre crop
    batch_size: int = 16
    steps: int = 10                            # timed steps: one train-path epoch, one timed fit
    epochs: int = 5                            # train path: the first epoch (tracing, cache fill) is not counted
    repeats: int = 4                           # timed fits per figure (medians: shared CPUs have slow spells)
    synthetic_size: tuple[int, int] = (360, 480)  # image size of the synthetic dataset (CamVid's)
    pipeline_batches: int = 40
    predict_size: tuple[int, int] = (360, 480)
    predict_batch: int = 8
    min_seconds: float = 2.0                   # predict / matmul: time at least this long
    tiled_size: int = 8000
    tile: int = 1024
    overlap: int = 128
    tiled_batch: int = 4
    matmul_n: int = 2048
    precision_recipe: str = "camvid-fcn"      # precision: the recipe trained in float32 and in the reduced policy
    precision_size: tuple[int, int] = (192, 256)  # CamVid's 360x480 scaled down (a multiple of the stride, 32)
    precision_batch: int | None = None         # None: the recipe's
    precision_steps: int = 200                 # the first steps of the recipe's schedule
    precision_points: int = 10                 # loss-curve points, each the mean loss of steps / points steps
    precision_images: int = 360                # distinct training images at most (reshuffled each pass)
    quick: bool = False

    @classmethod
    def full(cls, gpu: bool = False) -> BenchSettings:
        return cls(steps=40 if gpu else 10)

    @classmethod
    def quick_settings(cls) -> BenchSettings:
        return cls(train_size=(64, 64), short_side=(64, 80), batch_size=4, steps=3, epochs=2, repeats=1,
                   synthetic_size=(72, 96), pipeline_batches=5, predict_size=(60, 80), predict_batch=4,
                   min_seconds=0.2, tiled_size=1024, tile=256, overlap=32, tiled_batch=4, matmul_n=512,
                   precision_size=(64, 64), precision_batch=2, precision_steps=6, precision_points=3,
                   precision_images=12, quick=True)


def gpu_available() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def default_precisions(gpu: bool | None = None) -> tuple[str, ...]:
    """float32 and the fast mixed policy of the device: mixed_float16 on a GPU, mixed_bfloat16 on a CPU."""
    gpu = gpu_available() if gpu is None else gpu
    return ("float32", "mixed_float16") if gpu else ("float32", "mixed_bfloat16")


def default_jit(gpu: bool | None = None) -> bool:
    """XLA on with a GPU (as `segcli train --jit auto`), off on a CPU."""
    return gpu_available() if gpu is None else bool(gpu)


def _parse_jit(value) -> bool | None:
    from segcli.recipe import parse_switch

    try:
        return parse_switch(value)
    except ValueError:
        raise SegcliError(f"--jit {value!r}: expected auto, true or false") from None


def _check_choices(models, precisions, skip) -> None:
    from segcli.models import model_entry
    from segcli.precision import PRECISIONS

    for name in models:
        model_entry(name)  # ModelError naming the valid ones
    for p in precisions:
        if p not in PRECISIONS:
            raise SegcliError(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
    for s in skip:
        if s not in SECTIONS:
            raise SegcliError(f"unknown section {s!r} in --skip; sections: {', '.join(SECTIONS)}")
    if not models:
        raise SegcliError("no models given")
    if not precisions:
        raise SegcliError("no precisions given")


# --- timing helpers ----------------------------------------------------------------------------------

def _time_calls(fn: Callable[[], object], *, warmup: int = 2, min_calls: int = 3, min_seconds: float = 1.0,
                max_calls: int = 10_000) -> tuple[int, float]:
    """(calls, seconds) of repeated fn() after `warmup` untimed calls; fn must return only when done."""
    for _ in range(warmup):
        fn()
    calls, start = 0, time.perf_counter()
    while calls < min_calls or (time.perf_counter() - start < min_seconds and calls < max_calls):
        fn()
        calls += 1
    return calls, time.perf_counter() - start


def _free_memory() -> None:
    import keras

    keras.backend.clear_session()
    gc.collect()


# --- matmul peak -------------------------------------------------------------------------------------

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

    calls, seconds = _time_calls(run, warmup=1, min_calls=2, min_seconds=min_seconds)
    return 2.0 * n ** 3 * chunk * calls / seconds / 1e9


# --- datasets ----------------------------------------------------------------------------------------

@dataclass
class BenchData:
    root: Path            # a folder with train/ + trainannot/ + classes.json: exactly `pairs` pairs, no val split
    source: str           # the dataset it links to, or "synthetic"
    pairs: int
    classes_note: str


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        dst.symlink_to(src.resolve())
    except OSError:
        shutil.copyfile(src, dst)


def write_synthetic_dataset(root: str | Path, pairs: int, size: tuple[int, int] = (360, 480), seed: int = 0) -> Path:
    """`pairs` RGB PNG images with index-PNG masks (CamVid's 11 classes + void 11) in root/train(annot)."""
    import numpy as np

    from segcli.data import camvid_classes, write_image

    root = Path(root)
    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "trainannot").mkdir(parents=True, exist_ok=True)
    classes = camvid_classes()
    classes.save(root / "classes.json")
    palette = classes.palette()
    h, w = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(pairs):
        # bands and a disc of different classes, shifted per image, so crops see several classes
        labels = ((yy * 4 // h) * 3 + (xx * 3 // w) + i) % (classes.num_classes + 1)
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(h // 8, h // 3)
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, classes.num_classes)
        labels = labels.astype(np.uint8)
        noise = rng.normal(0, 12, (h, w, 3))
        image = np.clip(palette[labels].astype(np.float32) + noise, 0, 255).astype(np.uint8)
        write_image(root / "train" / f"synthetic_{i:05d}.png", image)
        write_image(root / "trainannot" / f"synthetic_{i:05d}.png", labels)
    return root


def prepare_data(data: str | Path | None, pairs: int, workdir: str | Path,
                 synthetic_size: tuple[int, int] = (360, 480)) -> BenchData:
    """A train-only folder of exactly `pairs` pairs (the train path holds one out as val: pairs - 1 = steps x batch).

    data=None: ../shared/data/camvid beside the checkout when present, else synthetic PNGs. The pairs of a
    real dataset are linked (cycled when it has fewer); its classes.json is kept, and without one CamVid's
    classes are assumed for index masks with values 0..11 (else the classes inferred from the masks).
    """
    from segcli.data import camvid_classes, open_dataset

    out = Path(workdir) / "data"
    if out.exists():
        shutil.rmtree(out)
    if data is None and not (DEFAULT_DATA / "train").is_dir():
        write_synthetic_dataset(out, pairs, synthetic_size)
        return BenchData(out, "synthetic", pairs, f"CamVid's 11 + void (synthetic {synthetic_size[0]}x"
                                                   f"{synthetic_size[1]} PNGs)")
    source = Path(data) if data is not None else DEFAULT_DATA
    dataset = open_dataset(source, val_fraction=0.0)
    train_pairs = dataset.splits.get("train") or dataset.pairs
    if not train_pairs:
        raise SegcliError("no training pairs found", source)
    classes, note = dataset.classes, dataset.classes_source
    if dataset.classes_source == "inferred":
        camvid = camvid_classes()
        if dataset.encoding == "index" and classes.num_classes <= camvid.num_classes + 1:
            classes, note = camvid, "no classes.json: CamVid's 11 classes + void (label 11) assumed"
        else:
            note = f"inferred from the masks ({classes.num_classes} classes)"
    (out / "train").mkdir(parents=True)
    (out / "trainannot").mkdir(parents=True)
    for i in range(pairs):
        pair = train_pairs[i % len(train_pairs)]
        stem = f"{i:05d}_{pair.image.stem}"
        _link_or_copy(pair.image, out / "train" / f"{stem}{pair.image.suffix}")
        _link_or_copy(pair.mask, out / "trainannot" / f"{stem}{pair.mask.suffix}")
    classes.save(out / "classes.json")
    return BenchData(out, str(source), pairs, note)


# --- training: the segcli path and a bare fit --------------------------------------------------------

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
    _free_memory()
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
                                   gpu=gpu_available()).steps_per_execution
        model.fit(ds, steps_per_epoch=max(2, spe), epochs=1, verbose=0, shuffle=False)  # tracing, first steps
        history = model.fit(ds, steps_per_epoch=steps, epochs=settings.repeats, verbose=0, shuffle=False,
                            callbacks=[Throughput(batch)])
        rates[variant] = statistics.median(float(r) for r in history.history["images_per_sec"])
        rates[f"{variant}_epochs"] = [float(r) for r in history.history["images_per_sec"]]
    del model, ds, images, labels
    _free_memory()
    return rates


# --- pipeline, predict, tiled predict -----------------------------------------------------------------

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
    h, w = (-(-s // stride) * stride for s in settings.predict_size)
    x = np.random.default_rng(0).uniform(0, 255, (settings.predict_batch, h, w, 3)).astype(np.float32)
    calls, seconds = _time_calls(lambda: model.predict_on_batch(x), warmup=2, min_calls=3,
                                 min_seconds=settings.min_seconds)
    del model
    _free_memory()
    return {"images_per_sec": calls * settings.predict_batch / seconds, "padded_size": [h, w]}


def write_big_image(path: str | Path, size: int, seed: int = 0) -> Path:
    """A size x size RGB PNG of colour gradients and noise (compresses like a photo, not like pure noise)."""
    import numpy as np

    from segcli.data import write_image

    rng = np.random.default_rng(seed)
    patch = 509  # a prime-sized noise patch tiled over the image: no obvious repeat at tile sizes
    noise = rng.integers(-16, 17, (patch, patch, 3), dtype=np.int16)
    ramp = np.linspace(40, 200, size).astype(np.int16)
    image = np.empty((size, size, 3), np.uint8)
    for y0 in range(0, size, patch):  # row bands keep the int16 temporaries small
        y1 = min(size, y0 + patch)
        reps = -(-size // patch)
        band = np.tile(noise[: y1 - y0], (1, reps, 1))[:, :size]
        band = band + np.stack([ramp[None, :].repeat(y1 - y0, 0), ramp[y0:y1, None].repeat(size, 1),
                                (255 - ramp)[None, :].repeat(y1 - y0, 0)], axis=-1)
        image[y0:y1] = np.clip(band, 0, 255)
    write_image(path, image)
    return Path(path)


def _tiled_child(spec: dict) -> dict:
    """In the child process: build the model, predict the big image with predict_files, report memory."""
    import keras

    from segcli.data import default_classes
    from segcli.inference import predict_files
    from segcli.modelfile import LoadedModel
    from segcli.models import build_model, output_stride
    from segcli.system import peak_rss_mb

    keras.utils.set_random_seed(0)
    model = build_model(spec["model"], int(spec["classes"]))
    loaded = LoadedModel(model, default_classes(int(spec["classes"])), output_stride(model))
    before = peak_rss_mb()
    start = time.perf_counter()
    records = predict_files(loaded, [Path(spec["image"])], Path(spec["out"]), tile=int(spec["tile"]),
                            overlap=int(spec["overlap"]), batch_size=int(spec["batch"]))
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
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        proc = subprocess.run([sys.executable, "-m", "segcli.bench", _CHILD_FLAG, json.dumps(spec)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SegcliError(f"tiled predict took longer than {timeout:.0f} s") from None
    finally:
        image.unlink(missing_ok=True)
        shutil.rmtree(workdir / "tiled-out", ignore_errors=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(_CHILD_MARK)]
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SegcliError(f"tiled predict child process failed (exit {proc.returncode}): {tail}")
    result = json.loads(lines[-1][len(_CHILD_MARK):])
    return {"model": model_name, "size": [settings.tiled_size, settings.tiled_size], "tile": settings.tile,
            "overlap": settings.overlap, "batch": settings.tiled_batch, **result}


# --- precision: float32 against the reduced policy, from the same weights on the same batches ---------

def precision_data(data, settings: BenchSettings, workdir: str | Path, void_as_class: bool):
    """(images uint8 (N, H, W, 3), labels uint8 (N, H, W), classes as trained, data source): up to
    `precision_images` training pairs (prepare_data's choice of dataset), the short side resized to the crop's,
    centre-cropped to `precision_size`."""
    import numpy as np

    from segcli.data import make_pipeline, open_dataset

    wanted = min(settings.precision_images, settings.precision_steps * (settings.precision_batch or 8))
    bench_data = prepare_data(data, max(1, wanted), Path(workdir) / "precision", settings.synthetic_size)
    dataset = open_dataset(bench_data.root, val_fraction=0.0)
    h, w = settings.precision_size
    ds = make_pipeline(dataset.splits["train"], dataset.classes, dataset.encoding, batch_size=8, training=False,
                       crop=(h, w), eval_short_side=min(h, w), cache=False, void_as_class=void_as_class)
    images, labels = [], []
    for x, y in ds:  # uint8 batch by batch: 360 CamVid crops take 53 MB, not 4x that
        images.append(np.clip(np.rint(x.numpy()), 0, 255).astype(np.uint8))
        labels.append(y.numpy())
    labels = np.concatenate(labels)
    classes = dataset.classes.with_void_as_class() if void_as_class else dataset.classes
    return (np.concatenate(images), labels.astype(np.uint8 if labels.max() < 256 else np.int32), classes,
            bench_data.source)


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
    from segcli.training.distribute import execution_settings
    from segcli.training.losses import make_loss
    from segcli.training.optim import make_optimizer

    gpu = gpu_available() if gpu is None else gpu
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
    jit, _ = execution_settings(train_cfg.jit, 0, gpu=gpu, distributed=False)
    steps_per_epoch = max(1, len(images) // batch)  # the schedule: the recipe's epochs over these images

    policies = ("float32", default_precisions(gpu)[-1])
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
        model.compile(optimizer=make_optimizer(train_cfg, steps_per_epoch),
                      loss=make_loss(train_cfg.loss, classes.num_classes, classes.ignore_index, None,
                                     train_cfg.label_smoothing), jit_compile=jit)
        history = model.fit(ds, steps_per_epoch=every, epochs=points, verbose=0, shuffle=False,
                            callbacks=[Throughput(batch)])
        curves[name] = [float(v) for v in history.history["loss"]]
        window_rates = [float(r) for r in history.history["images_per_sec"]]
        rates[name] = statistics.median(window_rates[1:] or window_rates)  # the first window traces
        del model
        _free_memory()
    ratio = [b / f if f else math.nan for f, b in zip(curves[policies[0]], curves[policies[1]])]
    auto, why = resolve_precision("auto")
    return {"recipe": settings.precision_recipe, "model": model_cfg.name, "cpu": cpu_name(),
            "cpu_bf16": cpu_bf16(), "auto": auto, "auto_reason": why, "data": source,
            "images": int(len(images)), "size": [h, w], "batch": batch, "steps": points * every,
            "every": every, "policies": list(policies), "steps_at": [every * (i + 1) for i in range(points)],
            "curves": curves, "ratio": ratio, "ratio_last": ratio[-1],
            "ratio_mean_last_half": statistics.fmean(ratio[len(ratio) // 2:]),
            "images_per_sec": rates}


# --- the whole benchmark -----------------------------------------------------------------------------

def _peak_fraction(gflops_per_image: float, rate: float | None, peak: float | None) -> float | None:
    if rate is None or not peak:
        return None
    return gflops_per_image * 3.0 * rate / peak


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

    from segcli.models import build_model, gflops, output_stride
    from segcli.system import hardware_summary

    say = progress or (lambda message: None)
    models = tuple(models)
    skip = {s.strip() for s in skip if s and s.strip()}
    if quick and precision_steps is None:
        skip.add("precision")  # two CamVid-recipe models to trace: about a minute even at tiny sizes
    gpu = gpu_available()
    precisions = tuple(precisions) if precisions else default_precisions(gpu)
    _check_choices(models, precisions, skip)
    jit = _parse_jit(jit)
    jit = default_jit(gpu) if jit is None else jit
    settings = BenchSettings.quick_settings() if quick else BenchSettings.full(gpu)
    if steps is not None:
        if int(steps) < 1:
            raise SegcliError(f"--steps must be >= 1, got {steps}")
        settings = replace(settings, steps=int(steps))
    if predict_batch is not None:
        if int(predict_batch) < 1:
            raise SegcliError(f"--predict-batch must be >= 1, got {predict_batch}")
        settings = replace(settings, predict_batch=int(predict_batch))
    if precision_steps is not None:
        if int(precision_steps) < 1:
            raise SegcliError(f"--precision-steps must be >= 1, got {precision_steps}")
        settings = replace(settings, precision_steps=int(precision_steps))
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
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()},
        "models": list(models), "precisions": list(precisions), "skipped": sorted(skip),
    }
    own_dir = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="segcli-bench-")) if own_dir else Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        # 1. matmul peak per compute dtype
        if "matmul" not in skip:
            dtypes = ["float32", "bfloat16"] + [COMPUTE_DTYPE[p] for p in precisions]
            peaks = {}
            for dtype in dict.fromkeys(dtypes):
                say(f"matmul {dtype} {settings.matmul_n}x{settings.matmul_n}")
                peaks[dtype] = matmul_gflops(dtype, settings.matmul_n, settings.min_seconds)
            result["matmul_gflops"] = peaks
        peaks = result.get("matmul_gflops", {})

        # 2. data for the train path and the pipeline
        num_classes, classes = 12, None  # CamVid's 11 + void trained as a class (fit_rates' default)
        bench_data = None
        if not {"train", "pipeline"} <= skip:
            pairs = settings.steps * settings.batch_size + 1  # + the one val pair of the train path
            say(f"data: {pairs} training pairs")
            bench_data = prepare_data(data, pairs, workdir, settings.synthetic_size)
            from segcli.data import load_classes

            classes = load_classes(bench_data.root / "classes.json").with_void_as_class()
            num_classes = classes.num_classes
            result["data"] = {"source": bench_data.source, "train_pairs": bench_data.pairs - 1, "val_pairs": 1,
                              "classes": num_classes, "classes_note": bench_data.classes_note}

        if "pipeline" not in skip:
            say("pipeline")
            result["pipeline_images_per_sec"] = pipeline_rate(bench_data, settings)

        # 3. training: the segcli path and a bare fit, per model and precision
        rows = []
        if not {"train", "fit"} <= skip:
            for name in models:
                flops = gflops(build_model(name, num_classes), *settings.train_size)
                for precision in precisions:
                    row = {"model": name, "precision": precision, "gflops_per_image": flops}
                    peak = peaks.get(COMPUTE_DTYPE[precision])
                    if "train" not in skip:
                        say(f"train path: {name} {precision}")
                        path = train_path_rate(name, precision, bench_data, settings, jit, workdir)
                        row["train_images_per_sec"] = path["images_per_sec"]
                        row["train_epochs_images_per_sec"] = path["epochs_images_per_sec"]
                    if "fit" not in skip:
                        say(f"bare fit: {name} {precision}")
                        fits = fit_rates(name, precision, settings, jit, classes)
                        row["fit_images_per_sec"] = fits["fit"]
                        row["fit_plain_images_per_sec"] = fits["fit_plain"]
                        row["fit_epochs_images_per_sec"] = fits["fit_epochs"]
                    if "train_images_per_sec" in row and "fit_images_per_sec" in row:
                        row["train_over_fit"] = row["train_images_per_sec"] / row["fit_images_per_sec"]
                    for key in ("train", "fit", "fit_plain"):
                        share = _peak_fraction(flops, row.get(f"{key}_images_per_sec"), peak)
                        if share is not None:
                            row[f"{key}_peak_fraction"] = share
                    rows.append(row)
            result["training"] = rows

        # 4. predict
        if "predict" not in skip:
            out = []
            for name in models:
                for precision in precisions:
                    say(f"predict: {name} {precision}")
                    rate = predict_rate(name, precision, settings, jit, num_classes)
                    out.append({"model": name, "precision": precision, "size": list(settings.predict_size),
                                "batch": settings.predict_batch, **rate})
            result["predict"] = out

        # 5. tiled predict memory, in a child process
        if "tiled" not in skip:
            name = "lambda-unet" if "lambda-unet" in models else models[0]
            say(f"tiled predict: {settings.tiled_size}x{settings.tiled_size}, {name}, child process")
            result["tiled"] = tiled_predict_memory(name, settings, workdir, num_classes)

        # 6. precision: loss curves of a CamVid recipe in float32 and in the reduced policy
        if "precision" not in skip:
            say(f"precision: {settings.precision_recipe}, {settings.precision_steps} steps in float32 and in "
                f"{default_precisions(gpu)[-1]}")
            result["precision"] = precision_curves(settings, data, workdir, gpu)
    finally:
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)
    return result


# --- printing ----------------------------------------------------------------------------------------

def _fmt(value, spec: str = ".1f", suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:{spec}}{suffix}"


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def bench_tables(result: dict) -> list:
    """Rich renderables (text lines and tables) for a run_bench result."""
    from rich.table import Table
    from rich.text import Text

    s, sysinfo = result["settings"], result["system"]
    out: list = [Text(f"{sysinfo['hardware']}; TensorFlow {sysinfo['tensorflow']}, Keras {sysinfo['keras']}, "
                      f"Python {sysinfo['python']}; jit {'on' if sysinfo['jit'] else 'off'}"
                      f"{'; QUICK (tiny sizes)' if result['quick'] else ''}")]
    if "data" in result:
        d = result["data"]
        out.append(Text(f"data: {d['source']} ({d['train_pairs']} train + {d['val_pairs']} val pairs linked, "
                        f"{d['classes']} classes; {d['classes_note']})"))
    if "matmul_gflops" in result:
        out.append(Text(f"matmul peak ({s['matmul_n']}x{s['matmul_n']}): " + ", ".join(
            f"{k} {v:,.0f} GFLOP/s" for k, v in result["matmul_gflops"].items())))
    if "pipeline_images_per_sec" in result:
        out.append(Text(f"input pipeline alone: {result['pipeline_images_per_sec']:,.1f} images/s "
                        f"({s['train_size'][0]}x{s['train_size'][1]} crops, batch {s['batch_size']})"))
    if result.get("training"):
        rows = result["training"]
        t = Table(title=f"training images/s ({s['train_size'][0]}x{s['train_size'][1]}, batch {s['batch_size']}, "
                        f"medians of {s['steps']}-step epochs)", caption=f"train: segcli's train path, "
                        f"{s['epochs'] - 1} epochs after the first; fit: bare model.fit on one cached batch (loss + "
                        f"metrics / loss only), {s['repeats']} timed epochs")
        for col in ("model", "precision", "train", "fit", "fit (loss)", "train/fit"):
            t.add_column(col, justify="left" if col in ("model", "precision") else "right")
        for r in rows:
            t.add_row(r["model"], r["precision"], _fmt(r.get("train_images_per_sec")),
                      _fmt(r.get("fit_images_per_sec")), _fmt(r.get("fit_plain_images_per_sec")),
                      _fmt(r.get("train_over_fit"), ".2f"))
        out.append(t)
        if any(k.endswith("_peak_fraction") for r in rows for k in r):
            t = Table(title="share of the matmul peak", caption="GFLOPs/image x 3 x images/s / matmul GFLOP/s "
                                                                "of the precision's compute dtype")
            for col in ("model", "precision", "GFLOPs/img", "train", "fit", "fit (loss)"):
                t.add_column(col, justify="left" if col in ("model", "precision") else "right")
            for r in rows:
                t.add_row(r["model"], r["precision"], _fmt(r.get("gflops_per_image"), ".2f"),
                          _pct(r.get("train_peak_fraction")), _pct(r.get("fit_peak_fraction")),
                          _pct(r.get("fit_plain_peak_fraction")))
            out.append(t)
    if result.get("predict"):
        t = Table(title=f"predict_on_batch images/s ({s['predict_size'][0]}x{s['predict_size'][1]}, "
                        f"batch {s['predict_batch']})")
        for col in ("model", "precision", "images/s", "run at"):
            t.add_column(col, justify="right" if col == "images/s" else "left")
        for r in result["predict"]:
            t.add_row(r["model"], r["precision"], _fmt(r["images_per_sec"]),
                      f"{r['padded_size'][0]}x{r['padded_size'][1]}")
        out.append(t)
    if "tiled" in result:
        r = result["tiled"]
        out.append(Text(f"tiled predict of a {r['size'][0]}x{r['size'][1]} image ({r['model']}, tile {r['tile']}, "
                        f"overlap {r['overlap']}, child process): peak RSS {r['peak_rss_mib']:,.0f} MiB "
                        f"({r['peak_rss_before_predict_mib']:,.0f} MiB before predict), {r['seconds']:.1f} s, "
                        f"{r['megapixels_per_sec']:.2f} Mpx/s"))
    if "precision" in result:
        r = result["precision"]
        base, reduced = r["policies"]
        kind = {"amx_bf16": "AMX", "avx512_bf16": "AVX512-BF16, no AMX"}.get(r["cpu_bf16"],
                                                                           "no native bf16: bf16 is emulated")
        out.append(Text(f"precision on {r['cpu']} ({kind}): --precision auto picks {r['auto']} ({r['auto_reason']}). "
                        f"{r['recipe']} trained {r['steps']} steps from the same weights on the same batches "
                        f"({r['images']} images of {r['data']}, {r['size'][0]}x{r['size'][1]}, batch {r['batch']}); "
                        f"images/s: {base} {_fmt(r['images_per_sec'][base])}, {reduced} "
                        f"{_fmt(r['images_per_sec'][reduced])}; loss ratio {reduced}/{base} over the last half "
                        f"{_fmt(r['ratio_mean_last_half'], '.3f')}"))
        t = Table(title=f"training loss (mean of every {r['every']} steps)")
        for col in ("step", base, reduced, "ratio"):
            t.add_column(col, justify="right")
        for step, a, b, q in zip(r["steps_at"], r["curves"][base], r["curves"][reduced], r["ratio"]):
            t.add_row(str(step), _fmt(a, ".4f"), _fmt(b, ".4f"), _fmt(q, ".3f"))
        out.append(t)
    return out


def _child_main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    print(_CHILD_MARK + json.dumps(_tiled_child(spec)), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == _CHILD_FLAG:
        sys.exit(_child_main(sys.argv[1:]))
    sys.exit("usage: segcli bench (this module runs as a child process of it)")
