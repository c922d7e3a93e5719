"""Input pipelines, one entry point: `make_pipeline` builds tf.data (segcli.data.tfdata) on the TensorFlow
backend and the NumPy/OpenCV loader (segcli.data.loader, a keras.utils.PyDataset) on the others.

Batches are `(images float32 (B, H, W, 3) in 0..255, labels int32 (B, H, W))`; pixels that are not
scored (void, padding) carry the classes' ignore_index. Importing this module imports neither TensorFlow nor
Keras; the engine is picked (and imported) when a pipeline is built.
"""

from __future__ import annotations

import time

import numpy as np

from segcli.data.augment import Augment
from segcli.data.classes import ClassMap
from segcli.data.options import PipelineOptions, pipeline_options

__all__ = ["Augment", "ENGINES", "PipelineOptions", "make_pipeline", "pipeline_engine", "pipeline_throughput"]

ENGINES = ("auto", "tfdata", "numpy")  # auto: tfdata on the TensorFlow backend, numpy (the loader) elsewhere


def pipeline_engine(engine: str = "auto") -> str:
    """"tfdata" or "numpy": `engine` itself, or for "auto" the one for Keras' backend (tfdata on TensorFlow)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown pipeline engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if engine == "auto":
        import keras

        return "tfdata" if keras.backend.backend() == "tensorflow" else "numpy"
    return engine


def make_pipeline(pairs, classes: ClassMap, encoding: str, options: PipelineOptions | None = None, *,
                  engine: str = "auto", **keywords):
    """Batches of (images float32 (B,H,W,3) 0..255, labels int32 (B,H,W)): a tf.data.Dataset (engine
    "tfdata"; "auto" on the TensorFlow backend) or a segcli.data.loader.Loader, a keras.utils.PyDataset
    (engine "numpy"; "auto" on the others). Both give NumPy arrays through np.asarray, both go to model.fit.

    How: `options` (a PipelineOptions), or its fields as keywords (`batch_size=8, training=True, ...`; with
    `options`, they replace its values). Deterministic: the same seed gives the same batches (for one engine;
    the engines draw differently).
    """
    options = pipeline_options(options, keywords)
    if pipeline_engine(engine) == "tfdata":
        from segcli.data import tfdata

        return tfdata.make_pipeline(pairs, classes, encoding, options)
    from segcli.data import loader

    return loader.make_loader(pairs, classes, encoding, options)


def pipeline_throughput(pairs, classes: ClassMap, encoding: str, *, batch_size: int = 16, batches: int = 50,
                        engine: str = "auto", **pipeline_kwargs) -> float:
    """Images/s of a repeating training pipeline, timed after one warm-up epoch (which fills the cache)."""
    pairs = list(pairs)
    ds = make_pipeline(pairs, classes, encoding, batch_size=batch_size, training=True, repeat=True,
                       engine=engine, **pipeline_kwargs)
    it = iter(ds)
    for _ in range(max(1, -(-len(pairs) // batch_size))):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        images, _ = next(it)
    np.asarray(images)
    return batches * batch_size / (time.perf_counter() - start)
