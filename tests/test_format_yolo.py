"""YOLO segmentation polygons (segcli.data.formats.yolo) on tiny datasets drawn by tests/formats_fixtures.py:
the labels equal what was drawn (a 1-pixel tolerance at polygon edges) with background added as class 0, the
class names' sources, box lines, and each problem as one line naming its file."""

import pickle
import shutil

import numpy as np
import pytest

import formats_fixtures as F
from benchmark_fixtures import check_train_evaluate
from segcli.data import open_dataset
from segcli.errors import DataError

NAMES = ("background", *F.CLASS_NAMES)


def test_ultralytics_layout_with_background_added_as_class_0(tmp_path):
    drawn = F.make_yolo(tmp_path)  # YOLO class c drawn for the scene's class c + 1
    dataset = open_dataset(tmp_path)
    assert dataset.layout == "yolo" and dataset.classes.names == NAMES and not dataset.problems
    F.assert_drawn(dataset, drawn)
    assert any("YOLO class c is class c + 1" in n for n in dataset.notices)
    again = pickle.loads(pickle.dumps(dataset.splits["val"][0].reader))
    np.testing.assert_array_equal(again((F.H, F.W)), F.labels_of(dataset, dataset.splits["val"][0]))


def test_roboflow_layout_and_the_other_name_files(tmp_path):
    F.make_yolo(tmp_path / "u", names_file=False)
    for split, folder in (("train", "train"), ("val", "valid")):
        for part in ("images", "labels"):
            shutil.copytree(tmp_path / "u" / part / split, tmp_path / "rf" / folder / part)
    (tmp_path / "rf" / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 3\n"
                                               f"names: {list(F.CLASS_NAMES)}\n")  # a list, as Roboflow writes it
    dataset = open_dataset(tmp_path / "rf")
    assert dataset.layout == "yolo" and dataset.classes.names == NAMES and set(dataset.splits) == {"train", "val"}
    for pair in dataset.pairs:
        F.assert_scene(F.labels_of(dataset, pair), pair.image.stem)
    # no names anywhere: class_0.. from the ids the labels use; classes.txt (Label Studio, CVAT's obj.names alike)
    bare = open_dataset(tmp_path / "u")
    assert bare.classes.names == ("background", "class_0", "class_1", "class_2")
    assert any("classes class_0..class_2 from the label ids" in n for n in bare.notices)
    (tmp_path / "u" / "classes.txt").write_text("\n".join(F.CLASS_NAMES) + "\n")
    assert open_dataset(tmp_path / "u").classes.names == NAMES


def test_names_starting_with_background_are_not_shifted(tmp_path):
    F.make_yolo(tmp_path, names_file=False)
    for label in (tmp_path / "labels").rglob("*.txt"):  # YOLO ids = the scene's classes: 0 is background
        label.write_text("\n".join(F.yolo_line(value, polygon) for value, polygon in F.SCENES[label.stem]) + "\n")
    (tmp_path / "data.yaml").write_text("names:\n  0: background\n" + "".join(
        f"  {i + 1}: {n}\n" for i, n in enumerate(F.CLASS_NAMES)))
    dataset = open_dataset(tmp_path)
    assert dataset.classes.names == NAMES
    for pair in dataset.pairs:
        F.assert_scene(F.labels_of(dataset, pair), pair.image.stem)


def test_a_dataset_file_naming_format_yolo_keeps_background_in_front(tmp_path):
    drawn = F.make_yolo(tmp_path / "data", names_file=False)
    (tmp_path / "data.yaml").write_text(f"path: data\nformat: yolo\nnames: {list(F.CLASS_NAMES)}\n")
    dataset = open_dataset(tmp_path / "data.yaml")
    assert dataset.classes.names == NAMES and not dataset.problems
    F.assert_drawn(dataset, drawn)


def test_a_label_mapping_for_a_format_that_draws_its_labels_is_refused_in_one_line(tmp_path):
    from segcli.errors import SegcliError

    F.make_yolo(tmp_path / "data", names_file=False)
    (tmp_path / "data.yaml").write_text(f"path: data\nformat: yolo\nnames: {list(F.CLASS_NAMES)}\n"
                                        "label_mapping: {1: 0}\n")
    with pytest.raises(SegcliError, match="label_mapping.*draws its labels"):
        open_dataset(tmp_path / "data.yaml")


def test_box_lines_are_rectangles_and_unlabelled_images_background(tmp_path):
    F.make_yolo(tmp_path)
    (tmp_path / "labels" / "train" / "a.txt").write_text("1 0.5 0.5 0.5 0.25\n")  # cx cy w h: 32x24 at the centre
    (tmp_path / "labels" / "train" / "b.txt").write_text("")
    (tmp_path / "labels" / "train" / "c.txt").unlink()
    dataset = open_dataset(tmp_path)
    assert not dataset.problems
    by_stem = {p.image.stem: F.labels_of(dataset, p) for p in dataset.splits["train"]}
    box = [(16, 18), (48, 18), (48, 30), (16, 30)]
    F.assert_pixels_match(by_stem["a"], F.expected_labels([(2, box)]), F.outline_zone([(2, box)]))
    assert not by_stem["b"].any() and not by_stem["c"].any()
    assert any("1 line(s) are detection boxes (class cx cy w h): drawn as rectangles (a.txt)" in n
               for n in dataset.notices)
    assert any("1 image(s) without a label file and 1 empty label file(s): all background (c.jpg, b.txt)" in n
               for n in dataset.notices)


def test_problems_each_one_line_naming_the_file(tmp_path):
    F.make_yolo(tmp_path)
    labels = tmp_path / "labels" / "train"
    (labels / "a.txt").write_text("0 0.1 0.1 0.5\n")  # an odd count
    (labels / "b.txt").write_text(F.yolo_line(7, F.SCENES["b"][0][1]) + "\n")  # class 7 of 3 names
    (labels / "c.txt").write_text("0 1.5 1.5 1.9 1.5 1.9 1.9\n" + F.yolo_line(2, F.SCENES["c"][0][1]) + "\n")  # class 3
    (labels / "lost.txt").write_text("0 0.1 0.1 0.5 0.1 0.5 0.5\n")
    (tmp_path / "labels" / "val" / "d.txt").write_text("0 x 0.1 0.5 0.1 0.5 0.5\n")
    dataset = open_dataset(tmp_path)
    assert {(p.path, p.problem) for p in dataset.problems} == {
        (labels / "a.txt", "line 1: 3 coordinates; expected x y pairs, 3 or more (or a box: cx cy w h)"),
        (labels / "b.txt", "class id(s) 7 not among data.yaml's 3 names (ids 0..2): not drawn"),
        (labels / "c.txt", "1 polygon(s) lie wholly outside the image (coordinates are 0..1 of its width and "
                           "height): not drawn"),
        (labels / "lost.txt", "label file without image (nothing named lost.* in train/)"),
        (tmp_path / "labels" / "val" / "d.txt", "line 1: expected CLASS x1 y1 x2 y2 ..., numbers"),
    }
    c = next(p for p in dataset.splits["train"] if p.image.stem == "c")
    F.assert_pixels_match(F.labels_of(dataset, c), F.expected_labels([F.SCENES["c"][0]]),
                          F.outline_zone([F.SCENES["c"][0]]))  # the polygon inside is still drawn
    assert [p.image.stem for p in dataset.splits["val"]] == ["e"]  # a malformed file's pair is left out


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_coordinate_that_is_no_number_is_a_problem_not_garbage_labels(tmp_path, value):
    F.make_yolo(tmp_path)
    label = tmp_path / "labels" / "train" / "a.txt"
    label.write_text(f"0 {value} 0.1 0.5 0.1 0.5 0.5\n")  # float() reads it: cv2 drew int32 garbage before
    dataset = open_dataset(tmp_path)
    assert [(p.path, p.problem) for p in dataset.problems] == [
        (label, "line 1: a coordinate that is not a number (nan or inf)")]
    assert "a" not in [p.image.stem for p in dataset.pairs]


def test_names_with_ids_of_mixed_types_are_one_line(tmp_path):
    F.make_yolo(tmp_path)
    (tmp_path / "data.yaml").write_text("names:\n  0: bird\n  x: cat\n")  # sorting them was a TypeError
    with pytest.raises(DataError, match=r"data.yaml: names: ids must be 0..1, got 0, x$"):
        open_dataset(tmp_path)


def test_polygons_partly_outside_are_clipped_with_a_notice(tmp_path):
    F.make_yolo(tmp_path)
    (tmp_path / "labels" / "train" / "a.txt").write_text("0 -0.5 -0.5 0.5 -0.5 0.5 0.5 -0.5 0.5\n")
    dataset = open_dataset(tmp_path)
    assert not dataset.problems
    labels = F.labels_of(dataset, next(p for p in dataset.splits["train"] if p.image.stem == "a"))
    np.testing.assert_array_equal(np.argwhere(labels == 1).max(axis=0), [F.H // 2, F.W // 2])
    assert labels[0, 0] == 1 and (labels == 1).sum() == (F.H // 2 + 1) * (F.W // 2 + 1)
    assert any("1 polygon(s) reach outside the image (0..1): clipped to it (a.txt)" in n for n in dataset.notices)


def test_labels_without_images_get_a_hint(tmp_path):
    F.make_yolo(tmp_path)
    (tmp_path / "images").rename(tmp_path / "pictures")
    with pytest.raises(DataError, match="YOLO: labels/ has no images/ beside it"):
        open_dataset(tmp_path)


@pytest.mark.slow
def test_yolo_checks_trains_and_evaluates(cli, tmp_path):
    data = tmp_path / "yolo"
    drawn = F.make_yolo(data)
    scores = check_train_evaluate(cli, data, tmp_path, drawn, "yolo")
    assert scores["classes"] == list(NAMES)
