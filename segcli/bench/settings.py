"""What a benchmark run measures: the models, precisions, sizes and lengths (`BenchSettings`, full and --quick),
the device defaults (precisions, XLA) and the checks of the caller's choices. No TensorFlow at import."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from segcli.errors import SegcliError
from segcli.system import gpu_available  # run_bench looks it up here (tests replace it)

DEFAULT_MODELS = ("lambda-fcn", "lambda-unet")
COMPUTE_DTYPE = {"float32": "float32", "mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}


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

    def to_dict(self) -> dict:
        """JSON-ready (tuples as lists), as the result's "settings"."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def make_settings(*, quick: bool, gpu: bool, steps: int | None = None, predict_batch: int | None = None,
                  precision_steps: int | None = None, batch_size: int | None = None,
                  size: tuple[int, int] | None = None) -> BenchSettings:
    """The full or the --quick settings with the caller's steps, predict batch, precision steps, training batch
    (each >= 1) and training crop size (height, width; the random short-side range of the resize before the
    centre crop is scaled with the height)."""
    settings = BenchSettings.quick_settings() if quick else BenchSettings.full(gpu)
    for flag, field, value in (("--steps", "steps", steps), ("--predict-batch", "predict_batch", predict_batch),
                               ("--precision-steps", "precision_steps", precision_steps),
                               ("--batch-size", "batch_size", batch_size)):
        if value is not None:
            if int(value) < 1:
                raise SegcliError(f"{flag} must be >= 1, got {value}")
            settings = replace(settings, **{field: int(value)})
    if size is not None:
        height, width = (int(v) for v in size)
        if height < 1 or width < 1:
            raise SegcliError(f"--size must be positive, got {height}x{width}")
        scale = height / settings.train_size[0]
        settings = replace(settings, train_size=(height, width),
                           short_side=tuple(round(s * scale) for s in settings.short_side))
    return settings


def default_precisions(gpu: bool | None = None) -> tuple[str, ...]:
    """float32 and the fast mixed policy of the device: mixed_float16 on a GPU, mixed_bfloat16 on a CPU."""
    gpu = gpu_available() if gpu is None else gpu
    return ("float32", "mixed_float16") if gpu else ("float32", "mixed_bfloat16")


def default_jit(gpu: bool | None = None, backend: str | None = None) -> bool:
    """XLA on with a GPU (as `segcli train --jit auto`), off on a CPU; always on with the jax backend (Keras runs
    jax uncompiled op by op otherwise). backend: Keras' (None: the active one)."""
    if backend is None:
        import keras

        backend = keras.backend.backend()
    if backend == "jax":
        return True
    return gpu_available() if gpu is None else bool(gpu)


def parse_jit(value) -> bool | None:
    """--jit: auto (None), true or false (segcli.choices.parse_switch), else the one-line error."""
    from segcli.choices import parse_switch

    try:
        return parse_switch(value)
    except ValueError:
        raise SegcliError(f"--jit {value!r}: expected auto, true or false") from None


def bench_model(name: str) -> tuple[str, dict]:
    """A model as the benchmark names it: a registered model (`unet`), or MODEL:ENCODER (`unet:mobilenetv3small`,
    one of Keras' backbones) -> (the registered name, its build options)."""
    base, _, encoder = name.partition(":")
    return base, ({"encoder": encoder} if encoder else {})


def check_choices(models, precisions, skip, sections) -> None:
    """Every model registered (and its encoder one of the backbones), every precision known, every skipped name
    one of `sections`; at least one model and one precision."""
    from segcli.choices import PRECISIONS, check_choice
    from segcli.models import list_encoders, model_entry

    for name in models:
        base, options = bench_model(name)
        model_entry(base)  # ModelError naming the valid ones
        if "encoder" in options and options["encoder"] not in list_encoders():
            raise SegcliError(f"unknown encoder {options['encoder']!r} in {name!r}; MODEL:ENCODER takes one of "
                              f"{', '.join(list_encoders())}")
    for p in precisions:
        try:
            check_choice(p, PRECISIONS)
        except ValueError as exc:
            raise SegcliError(f"--precisions: {exc}") from None
    for s in skip:
        if s not in sections:
            raise SegcliError(f"unknown section {s!r} in --skip; sections: {', '.join(sections)}")
    if not models:
        raise SegcliError("no models given")
    if not precisions:
        raise SegcliError("no precisions given")
