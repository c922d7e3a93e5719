"""The bench's engines section: one bench model exported to each format whose runtime is installed and run on
the same images as the .keras, images/s and the masks' agreement with Keras per engine (segcli.inference.engines).

The exports are written on the TensorFlow backend (SavedModel, TFLite and OpenVINO need it; on jax and torch the
section says so in result["unavailable"]). Each engine runs the batch as `segcli predict` does
(segcli.inference.predict_batch: padded to the output stride, one call per batch), in float32.
"""

from __future__ import annotations

from pathlib import Path

from segcli.bench.measurements import Unavailable, build_bench_model
from segcli.bench.settings import BenchSettings
from segcli.bench.timing import time_calls

# (engine, the export's format and file name; None: the .keras itself)
ENGINE_ROWS = (("keras", None, "model.keras"), ("onnxruntime", "onnx", "model.onnx"),
               ("openvino", "openvino", "model.xml"), ("tflite", "tflite", "model.tflite"))


def engine_rates(model_name: str, settings: BenchSettings, workdir: str | Path, num_classes: int = 12) -> dict:
    """Images/s of each installed engine on one random batch of settings.predict_size images (float32), and the
    share of pixels whose label equals Keras'; the engines not installed are listed with their install line."""
    import keras
    import numpy as np

    from segcli.data import default_classes
    from segcli.export import export_model
    from segcli.export.guards import missing_format_packages
    from segcli.inference import predict_batch
    from segcli.inference.engines import ENGINES, install_line, installed, load_predictor
    from segcli.modelfile import save_model

    if keras.backend.backend() != "tensorflow":
        raise Unavailable("the exports are written on the tensorflow backend")
    folder = Path(workdir) / "engines"
    folder.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    save_model(build_bench_model(model_name, num_classes), folder / "model.keras", default_classes(num_classes))
    x = np.random.default_rng(0).uniform(0, 255, (settings.predict_batch, *settings.predict_size, 3))
    x = x.astype(np.float32)
    rows, missing, reference = [], [], None
    for engine, fmt, name in ENGINE_ROWS:
        if fmt is not None and (missing_format_packages(fmt)[0] or not installed(engine)):
            missing.append(install_line(engine))
            continue
        if fmt is not None:
            export_model(folder / "model.keras", fmt, folder / name, force=True)
        loaded = load_predictor(folder / name, "float32", engine if fmt else None)

        def run(loaded=loaded):
            return predict_batch(loaded.model, x, stride=loaded.output_stride)

        calls, seconds = time_calls(run, warmup=2, min_calls=3, min_seconds=settings.min_seconds)
        labels = run().argmax(axis=-1)
        reference = labels if reference is None else reference
        rows.append({"engine": ENGINES[engine][0], "runtime": loaded.meta.get("runtime", f"keras {keras.__version__}"),
                     "images_per_sec": calls * settings.predict_batch / seconds,
                     "agreement": float(np.mean(labels == reference))})
        del loaded
    for row in rows:
        row["speedup"] = row["images_per_sec"] / rows[0]["images_per_sec"]
    return {"model": model_name, "size": list(settings.predict_size), "batch": settings.predict_batch,
            "precision": "float32", "rows": rows, "not_installed": missing}


__all__ = ["engine_rates", "ENGINE_ROWS"]
