"""The dataset file (segcli.data.formats.datasetfile): a YAML or TOML file naming a dataset's folders, classes
and label mapping, given wherever a dataset folder goes; an Ultralytics semantic-segmentation YAML as it is."""

import json
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from segcli.data import check_dataset, load_labels, open_dataset
from segcli.errors import DataError

from conftest import tiny_recipe

ULTRALYTICS_YAML = """\
# a Cityscapes-like dataset, as Ultralytics' cityscapes.yaml writes it
path: city # dataset root dir
train: images/train
val: images/val
masks_dir: masks
names:
  0: road
  1: car
# Map source label IDs to train IDs; ignore_label is converted to 255.
label_mapping:
  -1: ignore_label
  0: ignore_label
  3: ignore_label
  7: 0
  26: 1
download: |
  from pathlib import Path
"""


def stored_mask(size: int, shift: int) -> np.ndarray:
    """Cityscapes label IDs: road (7) left, car (26) right, a band of 3 (ground, ignored) on top, 0 (unlabelled)
    in a corner; `shift` moves the road/car border."""
    mask = np.full((size, size), 7, np.uint8)
    mask[:, size // 2 + shift:] = 26
    mask[: size // 8] = 3
    mask[-2:, -2:] = 0
    return mask


def mapped(mask: np.ndarray) -> np.ndarray:
    return np.select([mask == 7, mask == 26], [0, 1], 255)


def write_images(image_dir: Path, mask_dir: Path, n: int, size: int = 16, mask_suffix: str = ".png") -> None:
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        mask = stored_mask(size, i % 3)
        image = np.where(mapped(mask)[..., None] == 1, 200, 40).astype(np.uint8).repeat(3, axis=2)
        cv2.imwrite(str(image_dir / f"frankfurt_{i:03d}.jpg"), image)
        cv2.imwrite(str(mask_dir / f"frankfurt_{i:03d}{mask_suffix}"), mask)


def ultralytics_dataset(tmp_path: Path, train: int = 3, val: int = 2, size: int = 16) -> Path:
    root = tmp_path / "city"
    write_images(root / "images" / "train", root / "masks" / "train", train, size)
    write_images(root / "images" / "val", root / "masks" / "val", val, size)
    (tmp_path / "city.yaml").write_text(ULTRALYTICS_YAML)
    return tmp_path / "city.yaml"


def test_an_ultralytics_yaml_reads_as_it_is(tmp_path):
    dataset = open_dataset(ultralytics_dataset(tmp_path))
    assert dataset.layout == "dataset-file" and dataset.encoding == "index"
    assert {s: len(p) for s, p in dataset.splits.items()} == {"train": 3, "val": 2}
    assert dataset.classes.names == ("road", "car") and dataset.classes.ignore_index == 255
    assert dataset.classes_source == f"file:{tmp_path / 'city.yaml'}"
    assert dataset.label_mapping == {0: 255, 1: 1, 3: 255, 7: 0, 26: 1}  # 1, a class ID not listed, stays 1
    pair = dataset.splits["val"][1]
    assert pair.mask == tmp_path / "city" / "masks" / "val" / "frankfurt_001.png"
    labels = load_labels(pair, dataset.encoding, dataset.classes, dataset.label_mapping)
    assert np.array_equal(labels, mapped(stored_mask(16, 1)))
    report = check_dataset(dataset)
    assert report.ok, report.problems
    void = np.mean([(mapped(stored_mask(16, i % 3)) == 255).mean() for i in (0, 1, 2, 0, 1)])
    assert report.void_share == pytest.approx(void)


def test_a_toml_file_with_list_files_camvid_folders_and_colours(tmp_path):
    data = tmp_path / "elsewhere" / "data"
    write_images(data / "images" / "all", data / "masks" / "all", 4)
    write_images(data / "val", data / "valannot", 2, mask_suffix=".bmp")
    (data / "train.txt").write_text("./images/all/frankfurt_000.jpg\nimages/all/frankfurt_002.jpg\n\nmissing.jpg\n")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "data.toml").write_text(textwrap.dedent("""\
        path = "../elsewhere/data"
        train = "train.txt"
        val = "val"
        names = ["road", "car"]
        colors = [[128, 64, 128], [0, 0, 142]]
        ignore_label = 250
        [label_mapping]
        7 = 0
        26 = 1
        3 = "ignore_label"
        """))
    dataset = open_dataset(tmp_path / "conf" / "data.toml")
    assert [p.image.name for p in dataset.splits["train"]] == ["frankfurt_000.jpg", "frankfurt_002.jpg"]
    assert [p.mask.parent.name for p in dataset.splits["val"]] == ["valannot", "valannot"]
    assert dataset.classes.colors == ((128, 64, 128), (0, 0, 142)) and dataset.classes.ignore_index == 250
    assert dataset.label_mapping == {0: 0, 1: 1, 7: 0, 26: 1, 3: 250}  # the class IDs not listed stay themselves
    assert [(p.path.name, p.problem) for p in dataset.problems] == [("train.txt", "line 3: missing.jpg: no such image")]
    labels = load_labels(dataset.splits["val"][0], dataset.encoding, dataset.classes, dataset.label_mapping)
    want = np.where(mapped(stored_mask(16, 0)) == 255, 250, mapped(stored_mask(16, 0)))
    want[-2:, -2:] = 0  # stored 0, not in the mapping, is class 0 (Ultralytics' rule), not ignored
    assert np.array_equal(labels, want)


def test_a_file_without_splits_reads_its_root_as_a_folder_and_names_its_classes(tmp_path):
    write_images(tmp_path / "d" / "images", tmp_path / "d" / "masks", 3)
    (tmp_path / "d.yml").write_text("path: d\nnames: [road, car]\nlabel_mapping: {7: 0, 26: 1}\n")
    dataset = open_dataset(tmp_path / "d.yml", val_fraction=0)
    assert len(dataset.splits["train"]) == 3 and dataset.classes.names == ("road", "car")
    (tmp_path / "f.yaml").write_text("path: d\nformat: images-masks\n")  # classes.json then, as for the folder
    (tmp_path / "d" / "classes.json").write_text(json.dumps({"classes": ["a", "b", "c", "d", "e", "f", "g", "h",
                                                                         *"ijklmnopqrstuvwxyz"]}))
    dataset = open_dataset(tmp_path / "f.yaml", val_fraction=0)
    assert dataset.classes.num_classes == 26 and dataset.classes_source == f"file:{tmp_path / 'd' / 'classes.json'}"


def test_relative_paths_resolve_as_ultralytics_does(tmp_path, monkeypatch):
    """`path` relative to the file, else to the working directory; a split's missing ../x tried as x."""
    write_images(tmp_path / "work" / "city" / "images" / "train", tmp_path / "work" / "city" / "masks" / "train", 2)
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "c.yaml").write_text("path: city\ntrain: ../images/train\nmasks_dir: masks\nnames: [a, b]\n"
                                             "label_mapping: {7: 0, 26: 1}\n")
    monkeypatch.chdir(tmp_path / "work")
    dataset = open_dataset(tmp_path / "cfg" / "c.yaml", val_fraction=0)
    assert dataset.splits["train"][0].image == tmp_path / "work" / "city" / "images" / "train" / "frankfurt_000.jpg"


@pytest.mark.parametrize("text, message", [
    ("train: images/train\nlable_mapping: {7: 0}\n", "lable_mapping: unknown key; valid keys: path, train"),
    ("path: nowhere\n", "path: 'nowhere' is not a folder"),
    ("path: city\ntrain: images/training\n", "train: 'images/training': no such folder or list file"),
    ("path: city\ntrain: images/train\nmasks_dir: masks\nnames: {0: road, 2: car}\n", "names: ids must be 0..1"),
    ("path: city\ntrain: images/train\nmasks_dir: masks\nnames: [road, car]\nlabel_mapping: {7: 5}\n",
     r"label_mapping: 7 -> 5, but the classes are 0..1 \(ignore_label 255\)"),
    ("path: city\ntrain: images/train\nmasks_dir: masks\nnames: [road, car]\nlabel_mapping: {7: road}\n",
     "label_mapping: the training ID of 7 .or ignore_label. must be an integer, got 'road'"),
    ("path: city\ntrain: images/train\nmasks_dir: masks\nnames: [road, car]\nnc: 3\n",
     "nc: 3, but names lists 2 classes"),
    ("path: city\ntrain: images/train\nmasks_dir: masks\nnames: [road, car]\ncolors: [[1, 2, 3]]\n",
     "colors: 1 colours for 2 names"),
    ("path: city\ntrain: images/train\nmasks_dir: masks\nnames: [road, car]\nignore_label: 1\n",
     "ignore_label: ignore_index 1 must not be a class index"),
    ("path: city\ntrain: images/train\nmasks_dir: labels\n", r"masks_dir: no image/mask pairs found \(3 files "
     r"without their pair, e.g. .*frankfurt_000.jpg: image without mask \(nothing named frankfurt_000.png"),
    ("path: city\ntrain: masks/train\n", "train: no image/mask pairs found .*its path has no images/ folder.*; "
     "without masks_dir, masks are looked for"),
    ("path: city\nformat: pascal\n", "format: 'pascal' is not a dataset format; known: "),
    ("path: city\ntrain: [images/train\n", "not valid YAML: "),
    ("- path\n- train\n", r"a dataset file holds keys \(path, train"),
    ("path: city\ntrain: images/train\nmasks_dir: masks\nnames: [road, car, road]\n",
     r"names: 'road' is listed twice \(ids 0 and 2\); class names must be unique"),
])
def test_a_bad_dataset_file_is_one_line_naming_the_file_and_the_key(tmp_path, text, message):
    ultralytics_dataset(tmp_path)
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(DataError, match=message) as caught:
        open_dataset(tmp_path / "bad.yaml")
    assert caught.value.path == tmp_path / "bad.yaml" and "\n" not in str(caught.value)


def test_a_recipe_given_as_the_data_says_so(tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[model]\nname = "unet"\n[train]\nepochs = 1\n')  # was "model: unknown key"
    with pytest.raises(DataError, match=r"recipe.toml: a recipe \(its \[model\] table\), not a dataset file: pass "
                                        "it with --recipe"):
        open_dataset(recipe)


def test_data_check_takes_a_dataset_file_and_a_bad_one_is_exit_2(cli, tmp_path):
    result = cli("data", "check", ultralytics_dataset(tmp_path))
    assert result.exit_code == 0, result.output
    assert "dataset-file" in result.stdout and "road" in result.stdout
    (tmp_path / "bad.toml").write_text('path = "city"\nnames = "road"\n')
    result = cli("data", "check", tmp_path / "bad.toml")
    assert result.exit_code == 2 and result.stderr.strip().count("\n") == 0
    assert "bad.toml: names: expected a list or an {id: value} mapping" in result.stderr


@pytest.mark.slow
def test_an_ultralytics_yaml_trains_and_evaluates_through_the_cli(cli, tmp_path):
    data = ultralytics_dataset(tmp_path / "data", train=8, val=2, size=64)
    out = tmp_path / "run"
    result = cli("train", "unet", data, "--recipe", tiny_recipe(tmp_path, epochs=1), "--out", out)
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert run["layout"] == "dataset-file" and run["dataset_classes"]["classes"][1]["name"] == "car"
    result = cli("evaluate", out / "best.keras", data, "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    void = sum((mapped(stored_mask(64, i % 3)) == 255).sum() for i in range(2))
    assert [c["name"] for c in scores["per_class"]] == ["road", "car"]
    assert scores["ignored_pixels"] == void and scores["pixels"] == 2 * 64 * 64 - void


def test_compare_takes_a_dataset_file_as_its_data(cli, tmp_path):
    """compare's last argument is its data when it is a folder or a dataset file, not a MODEL: here the unknown
    model is the only name refused (nothing trains)."""
    data = ultralytics_dataset(tmp_path)
    result = cli("compare", "nosuchmodel", data, "--out", tmp_path / "cmp")
    assert result.exit_code == 2 and "nosuchmodel" in result.stderr and "city.yaml" not in result.stderr


def test_outputs_inside_a_dataset_files_root_are_refused(cli, tmp_path):
    """The guards see the dataset file's root as the data, as they see a dataset folder: no run folder in it."""
    data = ultralytics_dataset(tmp_path)
    result = cli("train", "unet", data, "--recipe", tiny_recipe(tmp_path, epochs=1), "--out", tmp_path / "city" / "run")
    assert result.exit_code == 2 and "is inside the data folder" in result.stderr
    assert not (tmp_path / "city" / "run").exists()
