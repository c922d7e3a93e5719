"""What `predict_files` writes, and how: the output names, the .segcli mark of a folder predict writes into, the
.npy writer (one band of rows mapped at a time) and `PredictionWriter` (one image's mask, overlay and
probabilities, each through a temporary name)."""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segcli.data import ClassMap, write_image, write_mask_png
from segcli.files import (MARKER_NAME, allocate, check_free_space, new_temp_file, no_space_errors, segcli_folder_kind,
                          write_json)


@dataclass
class Prediction:
    """The files written for one input image (None: not asked for) and the image's size."""
    image: Path
    mask: Path
    overlay: Path | None
    probabilities: Path | None
    height: int
    width: int


_SUFFIXES = {"mask": ".png", "overlay": "_overlay.png", "probabilities": "_probs.npy"}  # after the input's stem


def output_names(stem: str, *, overlay: bool = False, probabilities: bool = False) -> list[str]:
    """The file names `predict_files` writes for an input of this stem."""
    return [stem + _SUFFIXES[kind] for kind, on in (("mask", True), ("overlay", overlay),
                                                     ("probabilities", probabilities)) if on]


PREDICTIONS_KIND = "predictions"  # the .segcli mark of a folder predict writes into, with the names it wrote


def written_by_predict(out_dir: Path) -> set[str]:
    """The output names an earlier `segcli predict` wrote in ``out_dir`` (from its .segcli mark): only those may
    be replaced; a file of the user's with a mask's name never is."""
    try:
        mark = json.loads((Path(out_dir) / MARKER_NAME).read_text())
        return set(mark["files"]) if mark.get("kind") == PREDICTIONS_KIND else set()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()


def record_outputs(out_dir: Path, names: list[str]) -> None:
    """Before writing: add ``names`` to the mark (so a run killed half-way may be run again); a folder that is
    another segcli folder (a run folder, say) keeps its own mark."""
    if segcli_folder_kind(out_dir) not in (None, PREDICTIONS_KIND):
        return
    write_json(out_dir / MARKER_NAME, {"made_by": "segcli", "kind": PREDICTIONS_KIND,
                                       "files": sorted(written_by_predict(out_dir) | set(names))})


class NpyRowWriter:
    """An (H, W, K) .npy file (its header written and its data's blocks reserved, so a full disk fails at creation)
    written through a memory map of one band
    of rows at a time: tiles arrive row by row, and unmapping each finished band keeps its pages out of this
    process's resident memory (a map of the whole file would hold every written page until the end).

    Supports `writer[rows, cols] = values` (slices) and `writer[...] = values`; call `close()` when done.
    """

    def __init__(self, path: str | Path, shape: tuple, dtype=np.float16, shown: str | Path | None = None):
        """``shown``: the path a full disk's message names (the output a temporary ``path`` becomes)."""
        self.path, self.shape, self.dtype = Path(path), tuple(int(s) for s in shape), np.dtype(dtype)
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape})
        self._offset = len(header.getvalue())
        size = self._offset + self.dtype.itemsize * int(np.prod(self.shape, dtype=np.int64))
        # Its blocks are reserved now: a disk too small fails here, as one line, not as a bus error in the map
        shown = self.path if shown is None else shown
        with no_space_errors(shown, size):
            check_free_space(shown, size)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                os.write(fd, header.getvalue())
                allocate(fd, size)
            finally:
                os.close(fd)
        self._band, self._rows = None, (0, 0)

    def _map(self, r0: int, r1: int) -> None:
        self.close()
        row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        self._band = np.memmap(self.path, dtype=self.dtype, mode="r+", offset=self._offset + r0 * row_bytes,
                               shape=(r1 - r0,) + self.shape[1:])
        self._rows = (r0, r1)

    def __setitem__(self, key, value) -> None:
        if key is Ellipsis:
            key = (slice(None), slice(None))
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        r0, r1, step = rows.indices(self.shape[0])
        if step != 1:
            raise ValueError("NpyRowWriter takes contiguous row slices")
        if self._band is None or not (self._rows[0] <= r0 and r1 <= self._rows[1]):
            self._map(r0, r1)
        self._band[r0 - self._rows[0]:r1 - self._rows[0], cols] = value

    def close(self) -> None:
        if self._band is not None:
            self._band.flush()
            self._band = None  # the last reference: the band is unmapped here



class PredictionWriter:
    """Writes each image's outputs into `out_dir` (checked, and existing): `<stem>.png` (palette PNG in the
    model's class colours, the input's H x W), with `overlay` `<stem>_overlay.png` (blend + legend), with
    `probabilities` `<stem>_probs.npy` (float16 (H, W, K), filled through `probs_target` as the tiles arrive).
    Every file is written to a temporary name and renamed, so a failure leaves no half-written output; call
    `discard()` at the end, which removes the probability files an error left unfinished."""

    def __init__(self, out_dir: str | Path, classes: ClassMap, *, overlay: bool = False, alpha: float = 0.5,
                 probabilities: bool = False):
        self.out_dir, self.classes, self.palette = Path(out_dir), classes, classes.palette()
        self.overlay, self.alpha, self.probabilities = overlay, alpha, probabilities
        self._open: dict[Path, NpyRowWriter] = {}

    def probs_target(self, path: Path, shape: tuple) -> NpyRowWriter:
        """The (H, W, K) array that receives the probabilities of `path` (`iter_predictions`' probs_out)."""
        # new_temp_file: the mode any new file gets, not mkstemp's 0600
        out = self.out_dir / (path.stem + _SUFFIXES["probabilities"])
        with no_space_errors(out):
            tmp = new_temp_file(out)
        try:
            writer = NpyRowWriter(tmp, shape, np.float16, shown=out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._open[path] = writer
        return writer

    def write(self, path: Path, image: np.ndarray, labels: np.ndarray) -> Prediction:
        """Write the mask (and overlay) of the input `path`, and move its finished probabilities into place."""
        stem = path.stem
        mask_path = self.out_dir / (stem + _SUFFIXES["mask"])
        write_mask_png(mask_path, labels, self.palette)
        overlay_path = probs_path = None
        if self.overlay:
            from segcli.overlay import overlay_image

            overlay_path = self.out_dir / (stem + _SUFFIXES["overlay"])
            write_image(overlay_path, overlay_image(image, labels, self.classes, self.alpha))
        if self.probabilities:
            writer = self._open.pop(path)
            writer.close()
            probs_path = self.out_dir / (stem + _SUFFIXES["probabilities"])
            os.replace(writer.path, probs_path)
        return Prediction(path, mask_path, overlay_path, probs_path, *labels.shape[:2])

    def discard(self) -> None:
        """Close and delete the probability files not moved into place (an error or Ctrl-C stopped the run)."""
        for writer in self._open.values():
            writer.close()
            writer.path.unlink(missing_ok=True)
        self._open.clear()


__all__ = ["Prediction", "PredictionWriter", "NpyRowWriter", "output_names", "written_by_predict", "record_outputs",
           "PREDICTIONS_KIND"]
