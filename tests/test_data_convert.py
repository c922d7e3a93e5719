"""`segcli data convert SRC OUT` (segcli.data.convert): any readable dataset written as segcli's images + masks
layout; the converted masks equal the labels read from the source, the converted folder opens with the same
classes and splits, and OUT is guarded like every writer's output."""

import json

import numpy as np
import pytest

import formats_fixtures as F
from benchmark_fixtures import check_train_evaluate, make_cityscapes
from segcli.data import open_dataset
from segcli.data.convert import convert_dataset
from segcli.data.masks import load_labels
from segcli.errors import SegcliError
from segcli.files import MARKER_NAME, TMP_TAG
from segcli.progress import Progress


def labels_by_image(dataset):
    return {split: {p.image.name: load_labels(p, dataset.encoding, dataset.classes, dataset.label_mapping)
                    for p in pairs} for split, pairs in dataset.splits.items()}


class Recorder(Progress):
    def __init__(self):
        self.calls = []

    def start(self, task, total=None):
        self.calls.append(("start", task, total))

    def advance(self, task, done, total=None, info=""):
        self.calls.append(("advance", task, done))

    def end(self, task):
        self.calls.append(("end", task))


@pytest.mark.parametrize("make", [F.make_roboflow_coco, F.make_label_studio_coco, F.make_yolo, F.make_labelme,
                                  make_cityscapes])
def test_the_converted_layout_reads_as_the_source(tmp_path, make):
    make(tmp_path / "src")
    source = open_dataset(tmp_path / "src", val_fraction=0)
    recorder = Recorder()
    result = convert_dataset(tmp_path / "src", tmp_path / "out", progress=recorder)
    assert result.source_layout == source.layout and result.counts == {s: len(p) for s, p in source.splits.items()}
    converted = open_dataset(tmp_path / "out", val_fraction=0)
    assert converted.layout == "images-masks" and converted.classes == source.classes
    assert converted.classes_source == f"file:{tmp_path / 'out' / 'classes.json'}" and not converted.problems
    expected, got = labels_by_image(source), labels_by_image(converted)
    assert got.keys() == expected.keys()
    for split in expected:
        assert got[split].keys() == expected[split].keys()
        for name, labels in expected[split].items():
            np.testing.assert_array_equal(got[split][name], labels, err_msg=name)
    for pair in source.pairs:  # images copied byte for byte
        split = next(s for s, pairs in source.splits.items() if pair in pairs)
        assert (tmp_path / "out" / split / "images" / pair.image.name).read_bytes() == pair.image.read_bytes()
    assert json.loads((tmp_path / "out" / MARKER_NAME).read_text())["kind"] == "convert"
    tasks = [c for c in recorder.calls if c[0] == "start"]
    assert tasks == [("start", f"convert {s}", len(p)) for s, p in source.splits.items()]
    assert ("advance", "convert train", len(source.splits["train"])) in recorder.calls


def test_images_of_one_name_in_a_split_get_their_own(tmp_path):
    make_cityscapes(tmp_path / "src", cities={"train": {"aachen": 1, "bochum": 1}, "val": {"bonn": 1}})
    for image in (tmp_path / "src" / "leftImg8bit").rglob("*.png"):  # one stem in two cities
        city = image.parent.name
        for path in (image, *(tmp_path / "src" / "gtFine" / image.parent.parent.name / city).glob("*")):
            path.rename(path.with_name(path.name.replace(city, "same")))
    result = convert_dataset(tmp_path / "src", tmp_path / "out")
    assert result.counts == {"train": 2, "val": 1}
    assert sorted(p.name for p in (tmp_path / "out" / "train" / "masks").iterdir()) == \
        ["same_000000_000019_leftImg8bit.png", "same_000000_000019_leftImg8bit_2.png"]


def test_out_is_guarded_like_every_writer(tmp_path):
    F.make_yolo(tmp_path / "src")
    out = tmp_path / "out"
    with pytest.raises(SegcliError, match="is inside the data folder"):
        convert_dataset(tmp_path / "src", tmp_path / "src" / "converted")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(SegcliError, match="exists, is not empty and was not made by segcli"):
        convert_dataset(tmp_path / "src", tmp_path / "mine", force=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    convert_dataset(tmp_path / "src", out)
    with pytest.raises(SegcliError, match="exists and is not empty; pass --force to replace it"):
        convert_dataset(tmp_path / "src", out)
    (out / "train" / "images" / "extra.jpg").write_bytes(b"x")
    convert_dataset(tmp_path / "src", out, force=True)  # its own folder: replaced whole
    assert not (out / "train" / "images" / "extra.jpg").exists()
    with pytest.raises(SegcliError, match="holds the data"):  # --force would remove the source with it
        convert_dataset(out / "train", out, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "out", "src"]


def test_a_failure_leaves_nothing(tmp_path):
    F.make_labelme(tmp_path / "src")
    F.draw_image(tmp_path / "src" / "val" / "e.jpg", h=40)  # its JSON says 48x64: found while converting
    with pytest.raises(SegcliError, match=r"e.json: annotations of e.jpg are for a 48x64 image"):
        convert_dataset(tmp_path / "src", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    assert not [p for p in tmp_path.rglob("*") if TMP_TAG in p.name]


def test_a_source_with_problems_is_refused_naming_the_first(tmp_path):
    F.make_yolo(tmp_path / "src")
    (tmp_path / "src" / "labels" / "train" / "a.txt").write_text("0 0.1\n")
    with pytest.raises(SegcliError, match=r"1 problem\(s\) in the dataset, first: .*a.txt: line 1"):
        convert_dataset(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_convert_then_check(cli, tmp_path):
    F.make_cvat_coco(tmp_path / "cvat")
    result = cli("data", "convert", tmp_path / "cvat", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert (f"wrote 5 pairs (train 3, val 2) of {tmp_path / 'cvat'} (coco) to {tmp_path / 'out'}"
            in result.stdout.replace("\n", ""))
    result = cli("data", "check", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["layout"] == "images-masks" and report["counts"] == {"train": 3, "val": 2}
    assert [c["name"] for c in report["classes"]] == ["background", *F.CLASS_NAMES]
    again = cli("data", "convert", tmp_path / "cvat", tmp_path / "out")
    assert again.exit_code == 2 and "pass --force to replace it" in again.output
    assert len(again.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_the_converted_folder_trains_and_evaluates(cli, tmp_path):
    drawn = F.make_yolo(tmp_path / "yolo")
    result = cli("data", "convert", tmp_path / "yolo", tmp_path / "out")
    assert result.exit_code == 0, result.output
    converted = {split: {tmp_path / "out" / split / "images" / image.name: labels for image, labels in by.items()}
                 for split, by in drawn.items()}
    scores = check_train_evaluate(cli, tmp_path / "out", tmp_path, converted, "images-masks")
    assert scores["classes"] == ["background", *F.CLASS_NAMES]
