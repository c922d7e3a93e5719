"""LabelMe JSON (segcli.data.formats.labelme) on tiny folders drawn by tests/formats_fixtures.py: the labels equal
what was drawn (a 1-pixel tolerance at polygon edges), rectangles and circles, the classes from labels.txt or
the labels used, and each problem as one line naming its file."""

import json
import pickle

import numpy as np
import pytest

import formats_fixtures as F
from benchmark_fixtures import check_train_evaluate
from segcli.data import open_dataset

NAMES = ("background", *F.CLASS_NAMES)


@pytest.mark.parametrize("splits", [True, False])
def test_json_beside_each_image_in_split_folders_or_one_folder(tmp_path, splits):
    drawn = F.make_labelme(tmp_path, splits=splits)
    dataset = open_dataset(tmp_path, val_fraction=0)
    assert dataset.layout == "labelme" and dataset.classes.names == NAMES and not dataset.problems
    assert {s: sorted(p.image for p in pairs) for s, pairs in dataset.splits.items()} == \
        {s: sorted(images) for s, images in drawn.items()}
    for pair in dataset.pairs:
        assert pair.mask == pair.image.with_suffix(".json")
        F.assert_scene(F.labels_of(dataset, pair), pair.image.stem)
    pair = dataset.pairs[0]
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(pair.reader))((F.H, F.W)), F.labels_of(dataset, pair))


def write_shapes(folder, shapes, name="a"):
    F.draw_image(folder / f"{name}.jpg")
    data = F.labelme_file(name, [])
    data["shapes"] = shapes
    return F.write_json(folder / f"{name}.json", data)


def test_rectangles_and_circles_are_filled_lines_and_points_left_out(tmp_path):
    write_shapes(tmp_path, [
        {"label": "cat", "points": [[40, 30], [10, 5]], "shape_type": "rectangle"},  # corners in any order
        {"label": "dog", "points": [[44, 24], [44, 36]], "shape_type": "circle"},  # centre, a point at r = 12
        {"label": "bird", "points": [[0, 0], [60, 40]], "shape_type": "line"},
        {"label": "bird", "points": [[5, 40]], "shape_type": "point"},
    ])
    dataset = open_dataset(tmp_path, val_fraction=0)
    labels = F.labels_of(dataset, dataset.pairs[0])
    rectangle = [(10, 5), (40, 5), (40, 30), (10, 30)]
    circle = [(44 + 12 * np.cos(t), 24 + 12 * np.sin(t)) for t in np.linspace(0, 2 * np.pi, 400, endpoint=False)]
    shapes = [(2, rectangle), (3, circle)]
    F.assert_pixels_match(labels, F.expected_labels(shapes), F.outline_zone(shapes))
    assert dataset.classes.names == NAMES  # the labels used, sorted: bird only in shapes left out still counts
    assert "shapes without an area to fill, left out: line x1, point x1" in dataset.notices


def test_labels_txt_orders_the_classes_and_marks_ignore(tmp_path):
    F.make_labelme(tmp_path)
    (tmp_path / "labels.txt").write_text("__ignore__\n_background_\ndog\nbird\ncat\n")
    data = json.loads((tmp_path / "train" / "a.json").read_text())
    data["shapes"][0]["label"] = "__ignore__"  # the first shape of scene a drawn as ignore
    data["shapes"].append({"label": "fish", "points": [[1, 1], [5, 1], [5, 5]], "shape_type": "polygon"})
    (tmp_path / "train" / "a.json").write_text(json.dumps(data))
    dataset = open_dataset(tmp_path)
    assert dataset.classes.names == ("background", "dog", "bird", "cat")
    assert [(p.path.name, p.problem) for p in dataset.problems] == [
        ("a.json", "label(s) fish not in labels.txt (drawn as ignore)")]
    order = {1: 2, 2: 3, 3: 1}  # the scenes' bird, cat, dog -> labels.txt's order
    for pair in dataset.pairs:
        shapes = [(order[v], polygon) for v, polygon in F.SCENES[pair.image.stem]]
        if pair.image.stem == "a":
            shapes[0] = (dataset.classes.ignore_index, shapes[0][1])
            shapes.append((dataset.classes.ignore_index, [(1, 1), (5, 1), (5, 5)]))
        F.assert_pixels_match(F.labels_of(dataset, pair), F.expected_labels(shapes), F.outline_zone(shapes))


def test_problems_each_one_line_naming_the_file(tmp_path):
    F.make_labelme(tmp_path)
    train = tmp_path / "train"
    (train / "a.json").write_text("")
    (train / "b.json").write_text('{"shapes": [')
    data = F.labelme_file("c", [(1, [(100, 100), (120, 100), (120, 120)]), (2, [(-20, 2), (30, 2), (30, 30)])])
    F.write_json(train / "c.json", data)
    F.write_json(tmp_path / "val" / "e.json", {**F.labelme_file("e", []), "imagePath": "gone.jpg"})
    (tmp_path / "val" / "e.jpg").unlink()
    F.draw_image(train / "new.jpg")  # not annotated yet
    dataset = open_dataset(tmp_path)
    assert {(p.path.name, p.problem) for p in dataset.problems} == {
        ("a.json", "empty annotation file"),
        ("b.json", "not valid JSON (Expecting value: line 1 column 13 (char 12))"),
        ("c.json", "1 shape(s) lie wholly outside the 48x64 image: not drawn"),
        ("e.json", "its image 'gone.jpg' is not there"),
    }
    assert "1 shape(s) reach outside their image by more than 1 pixel: clipped to it (c.json)" in dataset.notices
    assert "1 image(s) without a LabelMe JSON (not annotated yet): left out (new.jpg)" in dataset.notices
    assert [p.image.name for p in dataset.splits["train"]] == ["c.jpg"]


def test_an_image_path_naming_another_image_does_not_take_it(tmp_path):
    F.make_labelme(tmp_path)
    a = tmp_path / "train" / "a.json"
    F.write_json(a, {**json.loads(a.read_text()), "imagePath": "../val/d.jpg"})  # a copied JSON, or a rename
    b = tmp_path / "train" / "b.json"
    F.write_json(b, {**json.loads(b.read_text()), "imagePath": "c.jpg"})
    (tmp_path / "train" / "b.jpg").unlink()  # no image of its name: imagePath is read, and c.jpg is c.json's
    dataset = open_dataset(tmp_path)
    assert [(p.path.name, p.problem) for p in dataset.problems] == [("c.json", "its image c.jpg is b.json's too: "
                                                                               "left out")]
    assert {s: sorted(p.image.name for p in pairs) for s, pairs in dataset.splits.items()} == \
        {"train": ["a.jpg", "c.jpg"], "val": ["d.jpg", "e.jpg"]}  # d.jpg stays val's, a.jpg is a.json's
    for pair in dataset.pairs:
        F.assert_scene(F.labels_of(dataset, pair), pair.mask.stem)


def test_a_file_without_shapes_is_all_background(tmp_path):
    F.make_labelme(tmp_path)
    F.write_json(tmp_path / "train" / "b.json", F.labelme_file("b", []))
    dataset = open_dataset(tmp_path)
    assert not dataset.problems
    assert not F.labels_of(dataset, next(p for p in dataset.pairs if p.image.stem == "b")).any()
    assert "1 JSON file(s) without shapes: all background (b.json)" in dataset.notices


@pytest.mark.slow
def test_labelme_checks_trains_and_evaluates(cli, tmp_path):
    data = tmp_path / "labelme"
    drawn = F.make_labelme(data)
    scores = check_train_evaluate(cli, data, tmp_path, drawn, "labelme")
    assert scores["classes"] == list(NAMES)
