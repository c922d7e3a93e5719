"""Dataset formats: one module per format, each registering itself at import (segcli.data.formats.registry);
this package imports the built-in ones. A format module imports `register_format` from
`segcli.data.formats.registry` and its types from `segcli.data.formats.base` (never from this package: that
would be an import circle, which tests/test_imports.py refuses).

find_format tries the specific formats first (in the order imported below), then segcli's generic layouts."""

from segcli.data.formats.base import SPLITS, DatasetFormat, FormatData, Pair, Problem, match_pairs
from segcli.data.formats.registry import LAYOUT_HINT, find_format, get_format, list_formats, register_format
# the built-in formats: specific ones first (they register in this order), then segcli's generic layouts
from segcli.data.formats import datasetfile  # noqa: E402,F401  (a dataset file: .yaml, .yml, .toml)
from segcli.data.formats import voc, cityscapes, ade20k  # noqa: E402,F401  (benchmarks)
from segcli.data.formats import coco, yolo, labelme  # noqa: E402,F401  (annotation tools)
from segcli.data.formats import split_folders, images_masks, csv_pairs  # noqa: E402,F401  (generic)

__all__ = ["SPLITS", "DatasetFormat", "FormatData", "Pair", "Problem", "match_pairs", "LAYOUT_HINT",
           "find_format", "get_format", "list_formats", "register_format"]
