"""Training and predict images/s of segcli's nets through bare Keras, on whichever Keras backend is set.

Why this exists beside `segcli bench`: the GPU machines this project is sometimes lent carry JAX and
PyTorch but no TensorFlow, and only small wheels can be brought to them (TensorFlow's is ~600 MB).
segcli's models are plain Keras functional models, so they run there unchanged with
KERAS_BACKEND=jax (XLA-compiled, like `--jit`) or torch. `segcli bench` itself now runs on every backend
(`KERAS_BACKEND=jax segcli bench --skip train,pipeline,tiled,precision` gives the same matmul, bare fit and
predict figures, with segcli's compile path and metrics); this script stays for what bench does not do:
any recipe's [model] section by name, all three precisions in one run (float16 on a CPU too), a deadline,
a markdown table, and no segcli.training (Adam and sparse cross-entropy from logits straight from Keras,
mixed_float16 with Keras' automatic loss scaling). It reads no data files and imports only
`segcli.models` and `segcli.bench` (its precision table, matmul, cached batches and timing harness;
none of them imports TensorFlow).

    KERAS_BACKEND=jax python benchmarks/bench_keras_backend.py --json gpu.json --markdown gpu.md
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from segcli.bench import (COMPUTE_DTYPE, cached_batches, matmul_gflops, peak_fraction, random_batch,  # noqa: E402
                          time_calls)  # (no TensorFlow imported)
from segcli.errors import describe  # noqa: E402
from segcli.models import build_model, count_params, gflops, model_spec_from_toml  # noqa: E402

from segcli.recipe import RECIPES_DIR as RECIPES  # noqa: E402  (the shipped recipes; no TensorFlow imported)


def device_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20).stdout.strip().splitlines()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def model_spec(name: str) -> tuple[str, dict]:
    """A registered model name, or a recipe name whose [model] section is used."""
    path = RECIPES / f"{name}.toml"
    return model_spec_from_toml(path) if path.exists() else (name, {})


class EpochTimes(keras.callbacks.Callback):
    """Seconds per epoch. segcli.training.callbacks.Throughput does this too, but its package needs TensorFlow."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):  # logs are pulled to the host here, so the device has finished
        self.seconds.append(time.perf_counter() - self.start)

    def on_train_begin(self, logs=None):
        self.seconds = []


def fit_rate(model, batch: int, size: tuple[int, int], classes: int, steps: int, epochs: int, spe: int,
             jit) -> list[float]:
    batches = cached_batches(*random_batch(batch, size, classes))  # on the device, as bench's

    model.compile(optimizer=keras.optimizers.Adam(1.29e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit, steps_per_execution=spe)
    model.fit(batches(), steps_per_epoch=2 * spe, epochs=1, verbose=0)  # compile and first steps
    timer = EpochTimes()
    model.fit(batches(), steps_per_epoch=steps, epochs=epochs, verbose=0, callbacks=[timer])
    return [steps * batch / s for s in timer.seconds]


def predict_rate(model, batch: int, size: tuple[int, int], seconds: float = 3.0) -> float:
    x = np.random.default_rng(1).uniform(0, 255, (batch, *size, 3)).astype(np.float32)
    # predict_on_batch returns host arrays: the timing includes the copy back
    calls, elapsed = time_calls(lambda: model.predict_on_batch(x), warmup=2, min_calls=3, min_seconds=seconds)
    return calls * batch / elapsed


def markdown(result: dict) -> str:
    lines = [f"Keras {result['keras']} on {result['backend']}, {result['device']}; batch {result['batch']}, "
             f"{result['size'][0]}x{result['size'][1]}, {result['classes']} classes, synthetic tensors on the device.",
             "", "matmul GFLOP/s: " + ", ".join(f"{k} {v:,.0f}" for k, v in result["matmul_gflops"].items()), "",
             "| model | precision | GFLOPs/img | train img/s | % of peak | predict img/s |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for row in result["rows"]:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['precision']} | | error: {row['error'][:60]} | | |")
            continue
        lines.append(f"| {row['model']} | {row['precision']} | {row['gflops']:.1f} | {row['train_images_per_sec']:,.0f} "
                     f"| {100 * row['peak_fraction']:.1f}% | {row['predict_images_per_sec']:,.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["lambda-fcn", "lambda-unet"])
    ap.add_argument("--precisions", nargs="+", default=["float32", "mixed_float16", "mixed_bfloat16"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, nargs=2, default=[368, 480])
    ap.add_argument("--classes", type=int, default=12)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs; the median is reported")
    ap.add_argument("--steps-per-execution", type=int, default=1)
    ap.add_argument("--matmul-size", type=int, default=8192)
    ap.add_argument("--deadline", type=float, default=0, help="seconds; later configurations are skipped")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args(argv)
    begin = time.perf_counter()
    backend = keras.backend.backend()
    jit = True if backend == "jax" else "auto"
    result = {"backend": backend, "keras": keras.__version__, "device": device_name(), "batch": args.batch,
              "size": args.size, "classes": args.classes, "steps_per_execution": args.steps_per_execution,
              "matmul_gflops": {d: matmul_gflops(d, args.matmul_size) for d in ("float32", "float16", "bfloat16")},
              "rows": []}
    print(json.dumps({k: result[k] for k in ("backend", "device", "matmul_gflops")}), flush=True)
    for name in args.models:
        for precision in args.precisions:
            if args.deadline and time.perf_counter() - begin > args.deadline:
                print(f"deadline: skipped {name} {precision}", flush=True)
                continue
            row = {"model": name, "precision": precision}
            try:
                keras.mixed_precision.set_dtype_policy(precision)
                arch, options = model_spec(name)
                model = build_model(arch, args.classes, **options)
                row["params"] = count_params(model)
                row["gflops"] = gflops(model, *args.size)
                rates = fit_rate(model, args.batch, tuple(args.size), args.classes, args.steps, args.epochs,
                                 args.steps_per_execution, jit)
                row["train_epochs_images_per_sec"] = rates
                row["train_images_per_sec"] = statistics.median(rates)
                row["peak_fraction"] = peak_fraction(row["gflops"], row["train_images_per_sec"],
                                                     result["matmul_gflops"][COMPUTE_DTYPE[precision]])
                row["predict_images_per_sec"] = predict_rate(model, args.batch, tuple(args.size))
            except Exception as exc:  # one configuration failing must not lose the others' figures
                row["error"] = describe(exc)
            finally:
                keras.mixed_precision.set_dtype_policy("float32")
                keras.backend.clear_session()
            row["elapsed_s"] = round(time.perf_counter() - begin, 1)
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
            if args.json:
                args.json.write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    if args.markdown:
        args.markdown.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
