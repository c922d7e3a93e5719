"""OpenVINO INT8: NNCF's post-training quantisation of an exported float32 IR, calibrated on training images.

``quantize_openvino(xml, out, images, stride)`` reads the IR, runs NNCF's default preset with full bias
correction on the images, each centre-cropped to a multiple of the model's output stride, and writes OUT.xml +
OUT.bin through a temporary folder (the .bin first: the .xml names it). It needs ``nncf`` beside
``openvino`` (``pip install nncf``). What it costs in mIoU and buys in speed on CamVid: docs/deploy.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from segcli.errors import SegcliError
from segcli.export.formats import move_ir_into_place, temp_dir_beside
from segcli.files import no_space_errors

INSTALL_LINE = 'INT8 quantisation needs NNCF: pip install nncf (beside "segcli[openvino]")'


def _crop_to_stride(image: np.ndarray, stride: int) -> np.ndarray:
    h, w = (image.shape[0] // stride) * stride, (image.shape[1] // stride) * stride
    if not h or not w:
        raise SegcliError(f"a calibration image of {image.shape[0]}x{image.shape[1]} is smaller than the output "
                          f"stride {stride}")
    y, x = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    return np.ascontiguousarray(image[y:y + h, x:x + w], dtype=np.float32)


def quantize_openvino(xml: str | Path, out: str | Path, images: Sequence[np.ndarray], stride: int) -> Path:
    """Write an INT8 copy of the float32 IR `xml` at `out` (.xml + .bin), calibrated on `images` (RGB 0..255).
    An IR already at `out` is replaced: the caller decides that it may be (the engines benchmark writes into its
    own work folder)."""
    try:
        import nncf
        import openvino as ov
    except ImportError:
        raise SegcliError(INSTALL_LINE) from None
    if not images:
        raise SegcliError("INT8 quantisation needs calibration images; none were given")
    out = Path(out)
    model = ov.Core().read_model(str(xml))
    calibration = nncf.Dataset(list(images), lambda image: _crop_to_stride(image, stride)[None])
    # full bias correction: the fast one cost 0.9 points of CamVid val mIoU, this one none (docs/deploy.md)
    quantized = nncf.quantize(model, calibration, subset_size=len(images), fast_bias_correction=False)
    with no_space_errors(out), temp_dir_beside(out) as tmp:
        target = tmp / out.name
        ov.save_model(quantized, str(target), compress_to_fp16=False)
        move_ir_into_place(target, out)
    return out
