"""The timing harness: repeated calls timed for at least a while, medians of per-epoch rates, a figure's share
of the matmul peak, memory freed between measurements. Plain Python: no TensorFlow, no Keras at import
(benchmarks/bench_keras_backend.py uses it on the JAX backend)."""

from __future__ import annotations

import gc
import statistics
import time
from typing import Callable, Iterable


def time_calls(fn: Callable[[], object], *, warmup: int = 2, min_calls: int = 3, min_seconds: float = 1.0,
               max_calls: int = 10_000) -> tuple[int, float]:
    """(calls, seconds) of repeated fn() after `warmup` untimed calls; fn must return only when done."""
    for _ in range(warmup):
        fn()
    calls, start = 0, time.perf_counter()
    while calls < min_calls or (time.perf_counter() - start < min_seconds and calls < max_calls):
        fn()
        calls += 1
    return calls, time.perf_counter() - start


def median_after_first(rates: Iterable[float]) -> float:
    """The median of per-epoch (or per-window) rates after the first, which traces and fills caches; the only
    one when there is one."""
    rates = [float(r) for r in rates]
    return statistics.median(rates[1:] or rates)


def peak_fraction(gflops_per_image: float, rate: float | None, peak: float | None) -> float | None:
    """The share of the matmul peak: GFLOPs per image x 3 (forward + backward) x images/s / peak GFLOP/s; None
    without a rate or a peak."""
    if rate is None or not peak:
        return None
    return gflops_per_image * 3.0 * rate / peak


def free_memory() -> None:
    """Drop Keras' global state (models, traced functions) between measurements."""
    import keras

    keras.backend.clear_session()
    gc.collect()
