"""Datasets: classes files, layouts on disk, mask encodings, checks and input pipelines (tf.data or NumPy).

Knows no models and no CLI. Importing it imports neither TensorFlow nor Keras: make_pipeline imports its
engine's (tf.data on the TensorFlow backend, a keras.utils.PyDataset elsewhere) when it builds one.
"""

from segcli.data.augment import Augment
from segcli.data.check import CheckReport, check_dataset
from segcli.data.classes import ClassMap, camvid_classes, default_classes, load_classes
from segcli.data.formats.datasetfile import data_folders
from segcli.data.imageio import IMAGE_EXTS, read_image, read_label_png, write_image, write_mask_png
from segcli.data.layout import Dataset, Pair, Problem, open_dataset
from segcli.data.masks import ENCODINGS, decode_mask, detect_encoding, load_labels, read_mask

_PIPELINE_NAMES = ("PipelineOptions", "make_pipeline", "pipeline_throughput")

__all__ = [
    "ClassMap", "load_classes", "default_classes", "camvid_classes",
    "IMAGE_EXTS", "read_image", "read_label_png", "write_image", "write_mask_png",
    "ENCODINGS", "detect_encoding", "decode_mask", "read_mask", "load_labels",
    "Pair", "Dataset", "Problem", "open_dataset", "data_folders",
    "CheckReport", "check_dataset",
    "Augment",
    *_PIPELINE_NAMES,
]


def __getattr__(name):
    if name in _PIPELINE_NAMES:
        from segcli.data import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'segcli.data' has no attribute {name!r}")
