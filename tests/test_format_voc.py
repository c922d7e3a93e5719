"""Pascal VOC 2012 (segcli.data.formats.voc) on tiny trees drawn by tests/benchmark_fixtures.py."""

import shutil

import pytest

from benchmark_fixtures import assert_labels_match, check_train_evaluate, make_voc
from segcli.data import ClassMap, open_dataset
from segcli.data.formats import find_format
from segcli.data.formats.voc import voc_classes
from segcli.errors import DataError


def test_voc_classes_are_the_21_with_vocs_palette():
    classes = voc_classes()
    assert classes.num_classes == 21 and classes.names[0] == "background" and classes.names[-1] == "tvmonitor"
    assert classes.colors[0] == (0, 0, 0) and classes.colors[1] == (128, 0, 0)  # aeroplane
    assert classes.colors[15] == (192, 128, 128) and classes.colors[20] == (0, 64, 128)  # person, tvmonitor
    assert (classes.ignore_index, classes.ignore_color) == (255, (224, 224, 192))  # the border
    assert ClassMap.from_dict(classes.to_dict(), strict=True) == classes  # names and colours unique: a classes file


def test_voc_pairs_and_labels_from_the_lists(tmp_path):
    drawn = make_voc(tmp_path / "VOCdevkit" / "VOC2012", train=3, val=2)
    (tmp_path / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "test.txt").write_text("2009_000001\n")
    dataset = open_dataset(tmp_path)  # the folder holding VOCdevkit/
    assert dataset.layout == "voc" and dataset.encoding == "palette" and dataset.classes == voc_classes()
    assert dataset.classes_source == "format" and not dataset.problems
    assert_labels_match(dataset, drawn)  # 0..20 as drawn, the 255 border kept as the ignore label
    assert any("test.txt" in n and "left out" in n for n in dataset.notices)


def test_voc_augmented_set_adds_train_pairs_never_val_ones(tmp_path):
    drawn = make_voc(tmp_path, train=2, val=2, aug=3)
    dataset = open_dataset(tmp_path)
    assert len(dataset.splits["train"]) == 5 and dataset.encoding == "index"  # the aug masks are grey indices
    val = {p.image for p in dataset.splits["val"]}
    assert not val & {p.image for p in dataset.splits["train"]}
    assert all(p.mask.parent.name == "SegmentationClass" for p in dataset.splits["val"])
    assert_labels_match(dataset, drawn)
    assert any("3 extra train pairs" in n and "2 of its images are in val.txt" in n for n in dataset.notices)


def test_voc_augmented_set_without_a_list_is_every_aug_png(tmp_path):
    drawn = make_voc(tmp_path, train=2, val=1, aug=2, aug_list=None)
    dataset = open_dataset(tmp_path)
    assert_labels_match(dataset, drawn)
    assert any("SegmentationClassAug/" in n for n in dataset.notices)


def test_voc_missing_files_are_problems_naming_them(tmp_path):
    drawn = make_voc(tmp_path, train=3, val=1)
    lost_mask = tmp_path / "SegmentationClass" / "2007_000001.png"
    lost_mask.unlink()
    lost_image = tmp_path / "JPEGImages" / "2007_000002.jpg"
    lost_image.unlink()
    dataset = open_dataset(tmp_path)
    assert {(p.path, p.problem) for p in dataset.problems} == {(lost_mask, "listed in train.txt but missing"),
                                                               (lost_image, "listed in train.txt but missing")}
    assert [p.image.name for p in dataset.splits["train"]] == ["2007_000000.jpg"]
    del drawn["train"][tmp_path / "JPEGImages" / "2007_000001.jpg"], drawn["train"][lost_image]
    assert_labels_match(dataset, drawn)


def test_voc_almost_a_voc_tree_gets_a_hint(tmp_path):
    make_voc(tmp_path, train=1, val=1)
    (tmp_path / "ImageSets" / "Segmentation" / "train.txt").rename(tmp_path / "train.txt")
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").unlink()
    (tmp_path / "ImageSets" / "Segmentation").rmdir()
    with pytest.raises(DataError, match=r"no ImageSets/Segmentation/ with train.txt and val.txt"):
        find_format(tmp_path)
    (tmp_path / "ImageSets" / "Segmentation").mkdir()
    with pytest.raises(DataError, match=r"Segmentation: Pascal VOC: no train.txt or val.txt here"):
        open_dataset(tmp_path)
    shutil.rmtree(tmp_path / "SegmentationClass")
    with pytest.raises(DataError, match=r"has JPEGImages/ but no SegmentationClass/"):
        find_format(tmp_path)


@pytest.mark.slow
def test_voc_checks_trains_and_evaluates(cli, tmp_path):
    data = tmp_path / "VOC2012"
    drawn = make_voc(data, train=4, val=2, aug=2)
    scores = check_train_evaluate(cli, data, tmp_path, drawn, "voc")
    assert scores["classes"] == list(voc_classes().names)
