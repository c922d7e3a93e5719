"""OpenVINO INT8: NNCF's post-training quantisation of an exported float32 IR, calibrated on training images
(``segcli export MODEL --format openvino --int8 --data DATA``).

``quantize_openvino(xml, out, images, stride)`` reads the IR, runs NNCF's default preset with full bias
correction on the images (arrays or image files), each centre-cropped to a multiple of the model's output
stride, and writes OUT.xml + OUT.bin through a temporary folder (the .bin first: the .xml names it).
``dataset_images(data, count)`` picks the calibration images (spread over a dataset's train split) and the
images the result is checked on (its val split); ``export_openvino_int8`` writes the float32 IR (checked against
Keras by logits), quantises it and checks the INT8 IR by labels, as a user sees it: quantisation moves logits
by more than any float tolerance, and what matters is how many pixels change class. It needs the ``int8`` extra
(``nncf`` beside ``openvino``). What it costs in mIoU and buys in speed on CamVid: docs/deploy.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from segcli.backend import install_hint
from segcli.data import open_dataset, read_image
from segcli.errors import DataError, SegcliError
from segcli.export.formats import (export_openvino, keras_reference, move_ir_into_place, quiet_converters,
                                   temp_dir_beside)
from segcli.files import no_space_errors
from segcli.inference.engines import OpenVinoEngine

INSTALL_LINE = f"INT8 quantisation needs NNCF beside OpenVINO: {install_hint('int8')}"
DEFAULT_CALIBRATION = 300  # images: NNCF's default subset; on CamVid, 300 train images keep mIoU (docs/deploy.md)
CHECK_IMAGES = 10  # val images the INT8 IR's labels are compared with Keras' on
NOTE_BELOW = 0.99  # a label agreement under this gets a note: on CamVid it was 99.3% (docs/deploy.md)


@dataclass
class Int8Result:
    data: Path
    calibration_images: int  # from the train split
    check_images: int
    check_split: str  # "val", or "train" for a dataset without one
    label_agreement: float  # the fraction of the check images' pixels whose class is Keras' (float32)

    def note(self) -> str | None:
        """A line for the user when INT8 changes many labels, else None."""
        if self.label_agreement >= NOTE_BELOW:
            return None
        return (f"INT8 changes the class of {100 * (1 - self.label_agreement):.1f}% of the pixels of "
                f"{self.check_images} {self.check_split} images; score it with segcli evaluate before deploying it")

    def record(self) -> dict:
        """What the export's record (NAME.xml.segcli.json) keeps of the quantisation."""
        return {"precision": "int8", "calibration_images": self.calibration_images, "calibration_data": str(self.data),
                "label_agreement": self.label_agreement, "check_images": self.check_images,
                "check_split": self.check_split}


def _crop_to_stride(image: np.ndarray | Path, stride: int) -> np.ndarray:
    source = image
    if not isinstance(image, np.ndarray):
        image = read_image(image)
    h, w = (image.shape[0] // stride) * stride, (image.shape[1] // stride) * stride
    if not h or not w:
        problem = f"{image.shape[0]}x{image.shape[1]} is smaller than the model's output stride {stride}"
        if isinstance(source, np.ndarray):
            raise SegcliError(f"a calibration image of {problem}")
        raise DataError(problem, source)
    y, x = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    return np.ascontiguousarray(image[y:y + h, x:x + w], dtype=np.float32)


def dataset_images(data: str | Path, count: int, classes=None) -> tuple[list[Path], list[Path], str]:
    """(calibration images, check images, the check images' split) of the dataset at `data`: `count` images
    spread evenly over its train split (all of them when it has fewer), and up to CHECK_IMAGES spread over its
    val split (over train when it has none). `classes`: the model's, so the masks need not be scanned for them."""
    if count < 1:
        raise SegcliError(f"--calibration {count}: INT8 quantisation needs at least 1 calibration image")
    dataset = open_dataset(data, classes=classes, val_fraction=0.0)
    train = [p.image for p in dataset.splits.get("train", [])]
    if not train:
        raise DataError("no train split to calibrate INT8 quantisation on", data)
    split = "val" if dataset.splits.get("val") else "train"
    check = [p.image for p in dataset.splits[split]]
    return _spread(train, count), _spread(check, CHECK_IMAGES), split


def _spread(items: list, count: int) -> list:
    """`count` of `items` at even steps (all of them when there are fewer): a video's frames, not its first."""
    if len(items) <= count:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def label_agreement(model, run, images: Sequence[np.ndarray | Path], stride: int) -> float:
    """The fraction of the pixels of `images` (each cropped to the stride) whose class under `run` (an engine's
    run_batch) is the Keras `model`'s."""
    same = total = 0
    for image in images:
        x = _crop_to_stride(image, stride)[None]
        ref, got = keras_reference(model, x).argmax(-1), np.asarray(run(x)).argmax(-1)
        same, total = same + int(np.count_nonzero(ref == got)), total + ref.size
    return same / max(total, 1)


def export_openvino_int8(model, out: Path, sizes, data: Path, calibration: int, stride: int,
                         classes=None) -> tuple[list, float, Int8Result]:
    """Write the float32 IR (checked against Keras as `export_openvino` does), quantise it on `calibration`
    images of `data`'s train split and compare its labels with Keras' on val images; the INT8 IR is moved to
    `out` only then. Returns the float32 check, its tolerance and the INT8 result."""
    images, check, split = dataset_images(data, calibration, classes)
    with no_space_errors(out), temp_dir_beside(out) as tmp:
        float_ir = tmp / "float32" / out.name
        checks, tol = export_openvino(model, float_ir, sizes)
        int8_ir = quantize_openvino(float_ir, tmp / out.name, images, stride)
        engine = OpenVinoEngine(int8_ir, "float32")
        agreement = label_agreement(model, engine.run_batch, check, stride)
        del engine
        move_ir_into_place(int8_ir, out)
    return checks, tol, Int8Result(Path(data), len(images), len(check), split, agreement)


def quantize_openvino(xml: str | Path, out: str | Path, images: Sequence[np.ndarray | Path], stride: int) -> Path:
    """Write an INT8 copy of the float32 IR `xml` at `out` (.xml + .bin), calibrated on `images` (RGB 0..255
    arrays, or image files read one at a time). An IR already at `out` is replaced: the caller decides that it
    may be (export_openvino_int8 writes into its own temporary folder, the engines benchmark into its own work
    folder)."""
    try:
        import nncf
        import openvino as ov
    except ImportError:
        raise SegcliError(INSTALL_LINE) from None
    if not images:
        raise SegcliError("INT8 quantisation needs calibration images; none were given")
    out = Path(out)
    model = ov.Core().read_model(str(xml))
    calibration = nncf.Dataset(list(images), lambda image: _crop_to_stride(image, stride)[None])  # read lazily
    # full bias correction: the fast one cost 0.9 points of CamVid val mIoU, this one none (docs/deploy.md)
    with quiet_converters():
        quantized = nncf.quantize(model, calibration, subset_size=len(images), fast_bias_correction=False)
    with no_space_errors(out), temp_dir_beside(out) as tmp:
        target = tmp / out.name
        ov.save_model(quantized, str(target), compress_to_fp16=False)
        move_ir_into_place(target, out)
    return out
