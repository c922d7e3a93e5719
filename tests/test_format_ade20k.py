"""ADE20K (segcli.data.formats.ade20k) on tiny trees drawn by tests/benchmark_fixtures.py."""

import shutil

import pytest

from benchmark_fixtures import assert_labels_match, check_train_evaluate, make_ade20k
from segcli.data import ClassMap, open_dataset
from segcli.data.formats import find_format
from segcli.data.formats.ade20k import ade20k_classes
from segcli.errors import DataError


def test_ade20k_classes_are_objectinfo150s():
    classes = ade20k_classes()
    assert classes.num_classes == 150 and classes.ignore_index == 255
    assert classes.names[:4] == ("wall", "building", "sky", "floor") and classes.names[-1] == "flag"
    assert classes.names[7] == "bed" and classes.names[89] == "television"  # stripped; first synonym
    assert ClassMap.from_dict(classes.to_dict(), strict=True) == classes  # names and colours unique


def test_ade20k_zero_is_ignored_and_classes_shift_down(tmp_path):
    drawn = make_ade20k(tmp_path / "ADEChallengeData2016", train=2, val=2)  # 0, 1 and 150 in every mask
    dataset = open_dataset(tmp_path)  # the folder holding ADEChallengeData2016/
    assert dataset.layout == "ade20k" and dataset.classes == ade20k_classes() and not dataset.problems
    assert dataset.label_mapping[1] == 0 and dataset.label_mapping[150] == 149 and 0 not in dataset.label_mapping
    assert_labels_match(dataset, drawn)  # 0 -> 255, v -> v - 1


def test_ade20k_unpaired_files_are_problems(tmp_path):
    drawn = make_ade20k(tmp_path, train=3, val=1)
    image = tmp_path / "images" / "training" / "ADE_train_00000002.jpg"
    (tmp_path / "annotations" / "training" / "ADE_train_00000002.png").unlink()
    dataset = open_dataset(tmp_path)
    assert [(p.path, p.problem) for p in dataset.problems] == [
        (image, "image without mask (nothing named ADE_train_00000002.* in training/)")]
    del drawn["train"][image]
    assert_labels_match(dataset, drawn)


def test_ade20k_images_without_annotations_get_a_hint(tmp_path):
    make_ade20k(tmp_path, train=1, val=1)
    shutil.rmtree(tmp_path / "annotations")
    with pytest.raises(DataError, match=r"ADE20K: .*images/ found but no annotations/ beside it"):
        find_format(tmp_path)


@pytest.mark.slow
def test_ade20k_checks_trains_and_evaluates(cli, tmp_path):
    data = tmp_path / "ADEChallengeData2016"
    drawn = make_ade20k(data, train=4, val=2)
    scores = check_train_evaluate(cli, data, tmp_path, drawn, "ade20k")
    assert len(scores["per_class"]) == 150
