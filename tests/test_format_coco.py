"""COCO-style JSON (segcli.data.formats.coco) as Roboflow, CVAT and Label Studio export it, on tiny exports
drawn by tests/formats_fixtures.py: the labels equal what was drawn (a 1-pixel tolerance at polygon edges), RLE
of both kinds, overlaps, the classes' background, and each problem as one line naming its file."""

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

import formats_fixtures as F
from benchmark_fixtures import check_train_evaluate
from segcli.data import open_dataset
from segcli.data.check import check_dataset
from segcli.data.formats.raster import Drawing, Shape
from segcli.errors import DataError

NAMES = ("background", *F.CLASS_NAMES)


def test_roboflow_export_by_split_folder_without_its_project_category(tmp_path):
    drawn = F.make_roboflow_coco(tmp_path)
    dataset = open_dataset(tmp_path)
    assert dataset.layout == "coco" and dataset.classes.names == NAMES and not dataset.problems
    assert set(dataset.splits) == {"train", "val"}  # valid/ is val
    F.assert_drawn(dataset, drawn)
    assert any("category 0 ('animals') only names the project" in n for n in dataset.notices)


def test_cvat_export_subsets_and_their_image_folders(tmp_path):
    drawn = F.make_cvat_coco(tmp_path)  # instances_Train.json + images/Train/, instances_Validation.json + ...
    dataset = open_dataset(tmp_path)
    assert dataset.classes.names == NAMES and dataset.classes_source == "format" and not dataset.problems
    F.assert_drawn(dataset, drawn)
    # one file of the export given itself: its images still found in images/SUBSET/
    single = open_dataset(tmp_path / "annotations" / "instances_Train.json", val_fraction=0)
    F.assert_drawn(single, {"train": drawn["train"]})


def test_label_studio_export_ids_from_zero_and_windows_paths(tmp_path):
    drawn = F.make_label_studio_coco(tmp_path)
    data = json.loads((tmp_path / "result.json").read_text())
    data["images"][0]["file_name"] = "images\\" + data["images"][0]["file_name"].split("/")[-1]
    (tmp_path / "result.json").write_text(json.dumps(data))
    dataset = open_dataset(tmp_path, val_fraction=0)
    assert dataset.classes.names == NAMES  # category 0 is "bird": background added in front, not taken as one
    F.assert_drawn(dataset, drawn)


def test_a_background_category_is_class_0_itself(tmp_path):
    data = F.coco_file(("background", *F.CLASS_NAMES), {"a": F.SCENES["a"]}, first_id=0)
    for ann in data["annotations"]:
        ann["category_id"] += 1  # the scene's classes 1..3 are categories 1..3; 0 is "background"
    F.write_json(tmp_path / "annotations" / "instances_default.json", data)
    F.draw_image(tmp_path / "images" / "a.jpg")
    dataset = open_dataset(tmp_path, val_fraction=0)
    assert dataset.classes.names == NAMES and set(dataset.splits) == {"train"}  # subset "default" is train
    F.assert_scene(F.labels_of(dataset, dataset.splits["train"][0]), "a")


def rle_export(tmp_path, annotations, names=F.CLASS_NAMES):
    images = [{"id": 1, "file_name": "a.jpg", "height": F.H, "width": F.W}]
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    F.write_json(tmp_path / "train" / "_annotations.coco.json", data)
    F.draw_image(tmp_path / "train" / "a.jpg")
    return tmp_path


def region(top, left, bottom, right):
    mask = np.zeros((F.H, F.W), bool)
    mask[top:bottom, left:right] = True
    return mask


def test_rle_masks_uncompressed_and_compressed_are_exact(tmp_path):
    from pycocotools import mask as mask_api

    first, second = region(2, 3, 20, 30), F.polygon_mask([(30, 10), (60, 5), (50, 45)])
    compressed = mask_api.encode(np.asfortranarray(second.astype(np.uint8)))
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
         "segmentation": {"size": [F.H, F.W], "counts": F.rle_counts(first)}},
        {"id": 2, "image_id": 1, "category_id": 3, "iscrowd": 0,
         "segmentation": {"size": [F.H, F.W], "counts": compressed["counts"].decode("ascii")}},
    ]
    dataset = open_dataset(rle_export(tmp_path, annotations), val_fraction=0)
    expected = np.zeros((F.H, F.W), np.int32)
    expected[first], expected[second] = 1, 3
    np.testing.assert_array_equal(F.labels_of(dataset, dataset.splits["train"][0]), expected)


def test_a_malformed_rle_mask_is_a_problem_naming_its_file(tmp_path):
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                    "segmentation": {"size": [F.H, F.W], "counts": [10, 20]}}]  # 30 of 48x64 pixels
    report = check_dataset(open_dataset(rle_export(tmp_path, annotations), val_fraction=0))
    assert [(p.path.name, p.problem) for p in report.problems] == [
        ("_annotations.coco.json", "an RLE mask cannot be decoded (its counts add up to 30, not 48x64 = 3072 pixels)")]


def test_overlaps_later_over_earlier_and_crowd_regions_under_every_instance(tmp_path):
    crowd = region(0, 0, F.H, F.W // 2)
    square = [(10, 10), (40, 10), (40, 40), (10, 40)]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [F._flat(square)]},
        {"id": 2, "image_id": 1, "category_id": 2, "iscrowd": 0,
         "segmentation": [F._flat([(30, 20), (60, 20), (60, 46), (30, 46)])]},
        # listed last, yet drawn first: the instances above stay on top of it
        {"id": 3, "image_id": 1, "category_id": 3, "iscrowd": 1,
         "segmentation": {"size": [F.H, F.W], "counts": F.rle_counts(crowd)}},
    ]
    dataset = open_dataset(rle_export(tmp_path, annotations), val_fraction=0)
    expected = np.zeros((F.H, F.W), np.int32)
    expected[crowd] = 3
    shapes = [(1, square), (2, [(30, 20), (60, 20), (60, 46), (30, 46)])]
    for value, polygon in shapes:
        expected[F.polygon_mask(polygon)] = value
    F.assert_pixels_match(F.labels_of(dataset, dataset.splits["train"][0]), expected, F.outline_zone(shapes))


def test_the_reader_is_picklable_and_checks_the_image_size(tmp_path):
    F.make_roboflow_coco(tmp_path)
    dataset = open_dataset(tmp_path)
    pair = dataset.splits["train"][0]
    again = pickle.loads(pickle.dumps(pair.reader))
    np.testing.assert_array_equal(again((F.H, F.W)), pair.reader((F.H, F.W)))
    with pytest.raises(DataError, match=r"_annotations.coco.json: annotations of a.jpg are for a 48x64 image, "
                                        r"but the image is 40x64"):
        pair.reader((40, F.W))


def problems_of(root):
    dataset = open_dataset(root, val_fraction=0)
    return dataset, {(p.path.name, p.problem) for p in dataset.problems}


def test_problems_each_one_line_naming_the_file(tmp_path):
    drawn = F.make_roboflow_coco(tmp_path)
    path = tmp_path / "train" / "_annotations.coco.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 9  # unknown
    data["annotations"][1]["segmentation"] = [[100, 100, 120, 100, 120, 120]]  # wholly outside 48x64
    data["annotations"][2]["segmentation"][0][0] = -20.0  # partly outside: clipped, a notice
    data["images"].append({"id": 99, "file_name": "lost.jpg", "height": F.H, "width": F.W})
    data["annotations"].append({**data["annotations"][3], "id": 77, "image_id": 1234})
    path.write_text(json.dumps(data))
    dataset, problems = problems_of(tmp_path)
    assert problems == {
        ("_annotations.coco.json", "1 annotation(s) with a category id not in its categories (drawn as ignore): "
                                   "1 (category 9)"),
        ("_annotations.coco.json", "1 polygon(s) lie wholly outside their image (not drawn): annotations 2 (a.jpg)"),
        ("_annotations.coco.json", f"1 image(s) listed but not found (looked in {tmp_path / 'train'}): lost.jpg"),
        ("_annotations.coco.json", "1 annotation(s) of an image id not in its images (not drawn): annotations 77"),
    }
    assert any("1 polygon(s) reach outside their image by more than 1 pixel: clipped to it (annotations 3)" in n
               for n in dataset.notices)
    labels = F.labels_of(dataset, next(p for p in dataset.splits["train"] if p.image.stem == "a"))
    assert (labels == dataset.classes.ignore_index).sum() > 0  # the unknown category's pixels are ignored
    assert len(dataset.splits["train"]) == len(drawn["train"])


def test_ids_that_are_no_ids_and_an_image_listed_twice_are_problems_not_a_crash(tmp_path):
    F.make_roboflow_coco(tmp_path)
    path = tmp_path / "train" / "_annotations.coco.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["image_id"] = [1]  # a list: unhashable (a TypeError before)
    data["annotations"][2]["category_id"] = {"id": 1}
    data["images"][2]["id"] = {"id": 3}
    data["images"].append({**data["images"][0], "id": 42})  # a.jpg a second time
    path.write_text(json.dumps(data))
    dataset, problems = problems_of(tmp_path)
    assert problems == {
        ("_annotations.coco.json", "image c.jpg: its id {'id': 3} is no id (an integer or text) its annotations "
                                   "can name"),
        ("_annotations.coco.json", "1 image(s) listed twice, under two ids (the second entry's annotations not "
                                   "drawn): a.jpg"),
        ("_annotations.coco.json", "3 annotation(s) of an image id not in its images (not drawn): annotations 1, 5, 6"),
        ("_annotations.coco.json", "1 annotation(s) with a category id not in its categories (drawn as ignore): "
                                   "3 (category {'id': 1})"),
    }
    assert sorted(p.image.name for p in dataset.splits["train"]) == ["a.jpg", "b.jpg"]


def test_a_vertex_far_outside_is_cut_to_the_image_not_overflowed(tmp_path):
    far = [(1, 1), (1e12, 1), (1e12, 1e12)]  # int32 pixels would wrap around: garbage labels before
    drawing = Drawing(Path("x.json"), "x.jpg", (Shape(1, polygon=tuple(v for p in far for v in p)),))
    with np.errstate(all="raise"):
        labels = drawing((F.H, F.W))
    F.assert_pixels_match(labels, F.polygon_mask(far).astype(np.int32), F.outline_zone([(1, far)]))


@pytest.mark.parametrize("text, problem", [
    ("", "empty annotation file"),
    ('{"images": [', "not valid JSON (Expecting value: line 1 column 13 (char 12))"),
    ('{"images": [], "annotations": [], "categories": []}', "no annotations: every image would be all background"),
    ('{"shapes": []}', 'not a COCO file: expected "images", "categories" and "annotations" lists'),
])
def test_a_bad_file_is_one_problem_and_the_other_files_still_read(tmp_path, text, problem):
    F.make_roboflow_coco(tmp_path)
    (tmp_path / "valid" / "_annotations.coco.json").write_text(text)
    dataset, problems = problems_of(tmp_path)
    assert problems == {("_annotations.coco.json", problem)}
    assert next(iter(dataset.problems)).path == tmp_path / "valid" / "_annotations.coco.json"
    assert set(dataset.splits) == {"train"}


def test_an_export_with_no_readable_file_is_one_line(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "_annotations.coco.json").write_text("{")
    with pytest.raises(DataError, match=r"no readable COCO annotation file: .*_annotations.coco.json: not valid JSON"):
        open_dataset(tmp_path)


def test_an_export_without_instance_files_gets_a_hint(tmp_path):
    F.write_json(tmp_path / "annotations" / "captions_val2017.json", {"images": [], "annotations": []})
    with pytest.raises(DataError, match=r"COCO: annotations/ holds captions_val2017.json but no instance masks"):
        open_dataset(tmp_path)


def test_rle_without_pycocotools_names_the_extra_and_polygons_need_none(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # as if not installed
    F.make_roboflow_coco(tmp_path / "polygons")
    assert open_dataset(tmp_path / "polygons").pairs  # polygons only: no pycocotools needed
    rle = rle_export(tmp_path / "rle", [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                                         "segmentation": {"size": [F.H, F.W], "counts": [10, 20, F.H * F.W - 30]}}])
    with pytest.raises(DataError) as caught:
        open_dataset(rle)
    assert str(caught.value) == (f"{rle / 'train' / '_annotations.coco.json'}: holds RLE masks, which need "
                                 "pycocotools: pip install 'segcli[formats]'")


def test_data_check_reports_an_annotation_for_another_image_size(tmp_path):
    F.make_roboflow_coco(tmp_path)
    F.draw_image(tmp_path / "train" / "b.jpg", h=40)
    report = check_dataset(open_dataset(tmp_path))
    assert [(p.path.name, p.problem) for p in report.problems] == [
        ("_annotations.coco.json", "annotations of b.jpg are for a 48x64 image, but the image is 40x64")]


def test_drawing_fills_polygons_rounded_to_the_nearest_pixel():
    drawing = Drawing(Path("x.json"), "x.jpg", (Shape(2, polygon=(1.6, 1.4, 5.4, 1.4, 5.4, 4.6, 1.6, 4.6)),),
                      background=0)
    labels = drawing((7, 8))
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(np.argwhere(labels == 2).min(axis=0), [1, 2])  # (1.4 -> 1, 1.6 -> 2)
    np.testing.assert_array_equal(np.argwhere(labels == 2).max(axis=0), [5, 5])  # (4.6 -> 5, 5.4 -> 5)
    assert (labels == 2).sum() == 5 * 4


@pytest.mark.slow
def test_coco_checks_trains_and_evaluates(cli, tmp_path):
    data = tmp_path / "export"
    drawn = F.make_roboflow_coco(data)
    scores = check_train_evaluate(cli, data, tmp_path, drawn, "coco")
    assert scores["classes"] == list(NAMES)
