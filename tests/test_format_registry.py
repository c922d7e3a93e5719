"""The dataset format registry (segcli.data.formats): detect order and hints, and the one reader of labels
(segcli.data.masks.load_labels) behind both pipelines and data check, for a format whose masks need a label
mapping and one whose labels come from a reader."""

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from segcli.data import ClassMap, check_dataset, load_labels, make_pipeline, open_dataset
from segcli.data.formats import (LAYOUT_HINT, FormatData, Pair, find_format, get_format, list_formats,
                                 register_format)
from segcli.errors import DataError

TWO = ClassMap(("road", "car"), ((128, 64, 128), (0, 0, 142)), ignore_index=255)
STORED = np.array([[7, 7, 26, 26], [7, 3, 26, 0], [7, 7, 26, 26], [33, 7, 26, 26]], np.uint8)  # 4x4 blocks
MAPPED = np.array([[0, 0, 1, 1], [0, 255, 1, 255], [0, 0, 1, 1], [255, 0, 1, 1]], np.int32)  # 7->0, 26->1


class Marked:
    """A specific format, detected by a marker file; `hint` when the marker's folder lacks `data/`."""

    description = "test format"

    def __init__(self, name, marker, mapping=None, with_reader=False):
        self.name, self.marker, self.mapping, self.with_reader = name, marker, mapping, with_reader

    def detect(self, root: Path) -> bool:
        return (root / self.marker).is_file() and (root / "data").is_dir()

    def read(self, root: Path, problems) -> FormatData:
        images = sorted((root / "data").glob("*.jpg.png"))
        pairs = [Pair(i, i.with_name(i.name.replace(".jpg.png", ".label.png")) if not self.with_reader
                      else i.with_name(i.name.replace(".jpg.png", ".json")),
                      Blocks(i.name) if self.with_reader else None) for i in images]
        return FormatData({"train": pairs[:2], "val": pairs[2:]}, root, classes=TWO, label_mapping=self.mapping)

    def hint(self, root: Path):
        return f"{self.marker} found but no data/ beside it" if (root / self.marker).is_file() else None


@dataclass
class Blocks:
    """A reader (picklable: a dataclass with __call__) that draws MAPPED scaled to the image size."""

    name: str

    def __call__(self, hw):
        return cv2.resize(MAPPED, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST).astype(np.int32)


register_format(Marked("test-mapped", "mapped.marker", mapping={7: 0, 26: 1, 3: 255}))
register_format(Marked("test-reader", "reader.marker", with_reader=True))


def write(root: Path, marker: str, n: int = 3) -> Path:
    (root / "data").mkdir(parents=True)
    (root / marker).write_text("")
    big = np.kron(STORED, np.ones((4, 4), np.uint8))  # 16x16
    for i in range(n):
        image = np.full((16, 16, 3), 40 * i, np.uint8)
        cv2.imwrite(str(root / "data" / f"{i}.jpg.png"), image)
        cv2.imwrite(str(root / "data" / f"{i}.label.png"), big)
        (root / "data" / f"{i}.json").write_text("{}")
    return root


def expected_labels():
    return np.kron(MAPPED, np.ones((4, 4), np.int32))


def test_specific_formats_are_tried_before_segcli_layouts(tmp_path):
    names = list_formats()
    assert names.index("test-mapped") < names.index("split-folders") < names.index("images-masks") < names.index("csv")
    root = write(tmp_path, "mapped.marker")
    (root / "images").mkdir()  # also an images+masks tree: the specific format wins
    (root / "masks").mkdir()
    assert find_format(root).name == "test-mapped"
    assert get_format("csv").name == "csv"
    with pytest.raises(DataError, match="unknown dataset format 'nope'; known formats: .*split-folders"):
        get_format("nope")
    with pytest.raises(ValueError, match="registered already"):
        register_format(Marked("test-mapped", "x"))


def test_generic_layouts_keep_their_order(tmp_path):
    for folder in ("train", "trainannot", "images", "masks"):
        (tmp_path / folder).mkdir()
    (tmp_path / "list.csv").write_text("")
    assert find_format(tmp_path).name == "split-folders"
    for folder in ("train", "trainannot"):
        (tmp_path / folder).rmdir()
    assert find_format(tmp_path).name == "images-masks"
    for folder in ("images", "masks"):
        (tmp_path / folder).rmdir()
    assert find_format(tmp_path).name == "csv"


def test_no_format_gives_the_hints_of_the_formats_it_almost_is(tmp_path):
    with pytest.raises(DataError, match="no dataset layout recognised; " + re.escape(LAYOUT_HINT)):
        find_format(tmp_path)
    (tmp_path / "mapped.marker").write_text("")
    with pytest.raises(DataError) as caught:
        open_dataset(tmp_path)
    assert "mapped.marker found but no data/ beside it" in str(caught.value) and LAYOUT_HINT not in str(caught.value)


def batches(dataset, engine):
    pairs = dataset.splits["train"] + dataset.splits["val"]
    ds = make_pipeline(pairs, dataset.classes, dataset.encoding, batch_size=3, training=False, engine=engine,
                       label_mapping=dataset.label_mapping)
    return np.concatenate([np.asarray(y) for _, y in ds])


@pytest.mark.parametrize("marker", ["mapped.marker", "reader.marker"])
def test_mapped_and_read_labels_in_both_pipelines_and_in_check(tmp_path, marker):
    dataset = open_dataset(write(tmp_path, marker))
    assert dataset.layout == marker.replace(".marker", "").replace("mapped", "test-mapped").replace(
        "reader", "test-reader")
    assert dataset.classes == TWO and dataset.classes_source == "format" and dataset.encoding == "index"
    want = expected_labels()
    for pair in dataset.pairs:
        assert np.array_equal(load_labels(pair, dataset.encoding, dataset.classes, dataset.label_mapping), want)
    for engine in ("numpy", "tfdata"):
        labels = batches(dataset, engine)
        assert labels.shape == (3, 16, 16) and all(np.array_equal(y, want) for y in labels), engine
    report = check_dataset(dataset)
    assert report.ok, report.problems
    counts = np.array([(want == c).sum() for c in (0, 1)]) * 3
    total = want.size * 3
    assert np.allclose(report.pixel_share, counts / total) and np.isclose(report.void_share, (want == 255).mean())


def test_without_its_mapping_the_stored_values_are_out_of_range(tmp_path):
    """The mapping is what makes the masks readable: the same files without it fail the range check."""
    dataset = open_dataset(write(tmp_path, "mapped.marker"))
    pair = dataset.pairs[0]
    with pytest.raises(DataError, match=r"label values 3, 7, 26, 33 outside the classes \(0..1, void 255\)"):
        load_labels(pair, dataset.encoding, dataset.classes)


def test_a_mapping_that_sends_everything_to_ignore_is_a_problem(tmp_path):
    register_format(Marked("test-all-ignored", "ignored.marker", mapping={99: 0}))
    report = check_dataset(open_dataset(write(tmp_path, "ignored.marker")))
    assert [p.problem for p in report.problems] == [
        "the train masks hold no class pixels (all void): the label_mapping sends every value they hold to "
        "ignore: a model trained on them learns nothing (it would predict that everywhere and score 100%); "
        "masks need at least two classes"]


@pytest.mark.parametrize("value", [5, -1])
def test_a_reader_giving_labels_outside_the_classes_is_named(tmp_path, value):
    root = write(tmp_path, "reader.marker", n=1)
    pair = Pair(root / "data" / "0.jpg.png", root / "data" / "0.json", lambda hw: np.full(hw, value, np.int32))
    with pytest.raises(DataError, match=rf"0.json: labels {value} outside the classes \(0..1, void 255\)"):
        load_labels(pair, "index", TWO)
