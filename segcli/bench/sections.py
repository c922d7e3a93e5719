"""The benchmark's sections, one function each, and `run_bench`, which runs them in the order of `SECTION_TABLE`
(the names `--skip` takes).

Each section takes the `BenchRun` (settings, choices, working folder, the result so far) and adds its figures
to `run.result`. The measurements they make are plain functions in `measurements` (`matmul_gflops`,
`predict_rate`, ...) and `fitting` (`train_path_rate`, `fit_rates`, ...), for scripts in benchmarks/ too. They
run on the active Keras backend (keras.ops, device tensors); TensorFlow is imported only inside them and only on
the TensorFlow backend (tf.data feeds the fits there, as it always did). A section that cannot run on the backend
(or without PyTorch, for `torch`) says why in result["unavailable"] (`BenchRun.attempt`).
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from segcli.bench import settings as bench_settings
from segcli.bench.data import BenchData, prepare_data
from segcli.bench.engines import engine_rates
from segcli.bench.fitting import fit_rates, precision_curves, train_path_rate
from segcli.bench.measurements import (TORCH_MODES, Unavailable, backend_info, build_bench_model, matmul_gflops,
                                       pipeline_engines, pipeline_rate, predict_rate, tiled_predict_memory,
                                       torch_reference_rates)
from segcli.bench.settings import COMPUTE_DTYPE, DEFAULT_MODELS, BenchSettings, check_choices, make_settings
from segcli.bench.timing import peak_fraction
from segcli.errors import SegcliError, first_line

Progress = Callable[[str], None]


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


def engines(run: BenchRun) -> None:
    """The first model exported to each installed engine's format: images/s on the same images, masks vs Keras'."""
    name = run.models[0]
    run.say(f"predict per engine: {name} exported to ONNX, OpenVINO and TFLite where installed, float32")
    run.result["engines"] = engine_rates(name, run.settings, run.workdir, run.num_classes)


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
    "predict": predict, "engines": engines, "tiled": tiled, "precision": precision,
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
    jit = bench_settings.parse_jit(jit)
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
