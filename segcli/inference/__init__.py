"""Prediction: array-level inference and the file-level `predict` workflow, one job a module.

- `arrays`: images in, labels / logits / probabilities out, no files (padding to the stride, tiles, batches);
- `tta`: test-time augmentation's passes and their average;
- `sources`: input files, folders and globs, read lazily;
- `writers`: mask, overlay and .npy outputs, the predictions folder's mark;
- `workflow`: `predict_files`: the checks, then the model, then the writes;
- `capture`: video files, cameras and streams opened with OpenCV, their frames read on a thread into a bounded queue;
- `video`: `predict_videos`: frames in, an overlay video (and masks per frame) out.

The public names of each are re-exported here: `from segcli.inference import predict_files, predict_labels`.
"""

from segcli.inference.arrays import (MAX_BATCH_PIXELS, iter_predictions, needs_tiles, predict_batch,  # noqa: F401
                                     predict_labels, predict_logits)
from segcli.inference.sources import resolve_inputs  # noqa: F401
from segcli.inference.tta import TTA, parse_tta  # noqa: F401
from segcli.inference.video import VideoInterrupted, VideoPrediction, predict_videos  # noqa: F401
from segcli.inference.workflow import check_predict_out, predict_files  # noqa: F401
from segcli.inference.writers import NpyRowWriter, Prediction, output_names  # noqa: F401

__all__ = ["predict_logits", "predict_labels", "predict_batch", "iter_predictions", "needs_tiles", "TTA", "parse_tta",
           "resolve_inputs", "predict_files", "check_predict_out", "output_names", "Prediction", "NpyRowWriter",
           "MAX_BATCH_PIXELS", "predict_videos", "VideoPrediction", "VideoInterrupted"]
