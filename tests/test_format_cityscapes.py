"""Cityscapes (segcli.data.formats.cityscapes) on tiny trees drawn by tests/benchmark_fixtures.py."""

import shutil

import numpy as np
import pytest

from benchmark_fixtures import (CITYSCAPES_TRAIN_IDS, IGNORE, assert_labels_match, check_train_evaluate,
                                make_cityscapes)
from segcli.data import ClassMap, open_dataset, read_label_png
from segcli.data.formats.cityscapes import LABEL_TO_TRAIN, cityscapes_classes
from segcli.errors import DataError


def test_cityscapes_classes_and_mapping_are_the_official_19():
    classes = cityscapes_classes()
    assert LABEL_TO_TRAIN == CITYSCAPES_TRAIN_IDS  # typed out from cityscapesScripts' labels.py in the fixtures
    assert classes.names[:3] == ("road", "sidewalk", "building") and classes.names[-1] == "bicycle"
    assert classes.num_classes == 19 and classes.ignore_index == 255
    assert classes.colors[0] == (128, 64, 128) and classes.colors[13] == (0, 0, 142)  # road, car
    assert classes.colors[18] == (119, 11, 32)  # bicycle
    assert ClassMap.from_dict(classes.to_dict(), strict=True) == classes


def test_cityscapes_label_ids_become_train_ids(tmp_path):
    drawn = make_cityscapes(tmp_path)  # every label ID 0..33 drawn in each mask
    dataset = open_dataset(tmp_path)
    assert dataset.layout == "cityscapes" and dataset.label_mapping == CITYSCAPES_TRAIN_IDS
    assert all(p.mask.name.endswith("_gtFine_labelIds.png") for p in dataset.pairs) and not dataset.problems
    assert_labels_match(dataset, drawn)  # 7 -> 0 ... 33 -> 18, the other IDs -> 255
    # the public test split (no labels: every pixel ignored) is left out, and said so
    assert "test" not in dataset.splits
    assert any("test: 1 image(s) left out" in n for n in dataset.notices)


def test_cityscapes_label_train_ids_are_used_as_they_are(tmp_path):
    drawn = make_cityscapes(tmp_path, train_ids=True, test_labels=True)  # train IDs drawn apart from label IDs
    dataset = open_dataset(tmp_path)
    assert dataset.label_mapping is None and set(dataset.splits) == {"train", "val", "test"}
    assert all(p.mask.name.endswith("_gtFine_labelTrainIds.png") for p in dataset.pairs)
    assert_labels_match(dataset, drawn)


def test_cityscapes_some_train_ids_missing_reads_label_ids_for_all(tmp_path):
    make_cityscapes(tmp_path, train_ids=True, test_labels=True)
    next((tmp_path / "gtFine" / "val").rglob("*_labelTrainIds.png")).unlink()
    dataset = open_dataset(tmp_path)
    assert dataset.label_mapping == CITYSCAPES_TRAIN_IDS
    expected = {split: {p.image: np.vectorize(lambda v: CITYSCAPES_TRAIN_IDS.get(int(v), IGNORE))(
        read_label_png(p.mask)) for p in pairs} for split, pairs in dataset.splits.items()}
    assert_labels_match(dataset, expected)
    assert any("only 4 of 5 images have a *_labelTrainIds.png" in n for n in dataset.notices)


def test_cityscapes_unpaired_files_are_problems(tmp_path):
    drawn = make_cityscapes(tmp_path, cities={"train": {"aachen": 2}, "val": {"ulm": 1}})
    mask = next((tmp_path / "gtFine" / "train" / "aachen").glob("aachen_000001_*_labelIds.png"))
    mask.unlink()
    stray = tmp_path / "gtFine" / "val" / "ulm" / "ulm_000009_000019_gtFine_labelIds.png"
    stray.write_bytes(mask.parent.joinpath("aachen_000000_000019_gtFine_labelIds.png").read_bytes())
    dataset = open_dataset(tmp_path)
    image = tmp_path / "leftImg8bit" / "train" / "aachen" / "aachen_000001_000019_leftImg8bit.png"
    assert sorted((p.path, p.problem) for p in dataset.problems) == [
        (stray, "mask without image (no ulm_000009_000019_leftImg8bit.png in leftImg8bit/val/ulm/)"),
        (image, "no aachen_000001_000019_gtFine_labelIds.png in gtFine/train/aachen/")]
    del drawn["train"][image]
    assert_labels_match(dataset, drawn)


def test_cityscapes_without_gtfine_gets_a_one_line_hint(tmp_path):
    make_cityscapes(tmp_path, cities={"train": {"aachen": 1}})
    shutil.rmtree(tmp_path / "gtFine")
    with pytest.raises(DataError, match=r"leftImg8bit/ found but no gtFine/ beside it") as caught:
        open_dataset(tmp_path)
    assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_cityscapes_checks_trains_and_evaluates(cli, tmp_path):
    data = tmp_path / "cityscapes"
    drawn = make_cityscapes(data, cities={"train": {"aachen": 3, "bochum": 1}, "val": {"frankfurt": 2},
                                          "test": {"berlin": 1}})
    scores = check_train_evaluate(cli, data, tmp_path, drawn, "cityscapes")
    assert scores["classes"] == list(cityscapes_classes().names)
