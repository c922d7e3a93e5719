"""Palette masks whose palette disagrees with classes.json's colours: `data check` names each file and the
mapping segcli uses (by index); --palette-by-colour maps the entries to classes by colour, wherever masks are
decoded (data check, the pipelines of train and evaluate, evaluate's scoring)."""

import json

import cv2
import numpy as np
import pytest

from segcli.data import ClassMap, check_dataset, open_dataset, read_mask, write_mask_png
from segcli.data.loader import make_loader
from segcli.errors import DataError

THREE = ClassMap(("a", "b", "c"), ((255, 0, 0), (0, 255, 0), (0, 0, 255)), ignore_index=255)
# the classes' colours in another order: entry 0 is c's blue, 1 is a's red, 2 is b's green; 255 void's black
PERMUTED = np.zeros((256, 3), np.uint8)
PERMUTED[:3] = [(0, 0, 255), (255, 0, 0), (0, 255, 0)]


def labels_8x8() -> np.ndarray:
    labels = np.zeros((8, 8), np.uint8)
    labels[:, 2:4], labels[:, 4:6], labels[:, 6:] = 1, 2, 255
    return labels


def palette_dataset(root, palettes: dict) -> None:
    """images/NAME.png and masks/NAME.png (labels_8x8 written as palette indices with that palette), classes.json."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name, palette in palettes.items():
        cv2.imwrite(str(root / "images" / f"{name}.png"), np.full((8, 8, 3), 90, np.uint8))
        write_mask_png(root / "masks" / f"{name}.png", labels_8x8(), palette)
    THREE.save(root / "classes.json")


def test_permuted_palette_is_named_and_read_by_index(tmp_path):
    palette_dataset(tmp_path, {"good": THREE.palette(), "swapped": PERMUTED})
    dataset = open_dataset(tmp_path, val_fraction=0)
    assert dataset.encoding == "palette"
    report = check_dataset(dataset)
    assert report.ok
    named = [n for n in report.notices if "palette disagrees" in n]
    assert len(named) == 1 and named[0].startswith("masks/swapped.png:"), report.notices
    assert "entry 0 has c's colour" in named[0] and "by index" in named[0] and "--palette-by-colour" in named[0]
    # read by index, as before: the class shares follow the indices
    assert read_mask(tmp_path / "masks" / "swapped.png", "palette", THREE).tolist() == labels_8x8().tolist()


def test_palette_by_colour_maps_entries_by_colour(tmp_path):
    palette_dataset(tmp_path, {"good": THREE.palette(), "swapped": PERMUTED})
    dataset = open_dataset(tmp_path, val_fraction=0, palette_by_colour=True)
    assert dataset.encoding == "palette-by-colour"
    expected = np.array([2, 0, 1], np.uint8)[np.minimum(labels_8x8(), 2)]
    expected[labels_8x8() == 255] = 255
    assert read_mask(tmp_path / "masks" / "swapped.png", dataset.encoding, THREE).tolist() == expected.tolist()
    assert read_mask(tmp_path / "masks" / "good.png", dataset.encoding, THREE).tolist() == labels_8x8().tolist()
    report = check_dataset(dataset)
    named = [n for n in report.notices if "palette disagrees" in n]
    assert len(named) == 1 and "by colour" in named[0] and "swapped.png" in named[0]
    assert report.ok
    # the pipeline (train's and evaluate's) decodes through the dataset's encoding
    loader = make_loader(dataset.splits["train"], THREE, dataset.encoding, batch_size=2, training=False)
    batch_labels = np.concatenate([np.asarray(y) for _, y in loader])
    by_name = {p.mask.name: i for i, p in enumerate(dataset.splits["train"])}
    assert batch_labels[by_name["swapped.png"]].squeeze().tolist() == expected.tolist()


def test_palette_by_colour_refuses_a_colour_no_class_has(tmp_path):
    odd = PERMUTED.copy()
    odd[2] = (7, 7, 7)
    palette_dataset(tmp_path, {"a": THREE.palette(), "odd": odd})
    report = check_dataset(open_dataset(tmp_path, val_fraction=0, palette_by_colour=True))
    assert [p.path.name for p in report.problems] == ["odd.png"]
    assert "entries whose colour is in no class" in report.problems[0].problem and "2 (7,7,7)" in report.problems[0].problem
    with pytest.raises(DataError, match="odd.png"):
        read_mask(tmp_path / "masks" / "odd.png", "palette-by-colour", THREE)


def test_matching_palette_and_classes_without_colours_give_no_notice(tmp_path):
    palette_dataset(tmp_path, {"a": THREE.palette(), "b": THREE.palette()})
    assert not [n for n in check_dataset(open_dataset(tmp_path, val_fraction=0)).notices if "palette" in n]
    # classes.json without colours: its default colours are not the palette's, and nothing is noticed
    (tmp_path / "classes.json").write_text(json.dumps({"classes": [{"name": n} for n in "abc"], "ignore_index": 255}))
    assert not [n for n in check_dataset(open_dataset(tmp_path, val_fraction=0)).notices if "palette" in n]


def test_data_check_cli_names_the_file_and_takes_the_flag(tmp_path, cli):
    palette_dataset(tmp_path, {"good": THREE.palette(), "swapped": PERMUTED})
    result = cli("data", "check", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    notices = json.loads(result.stdout)["notices"]
    assert any("swapped.png" in n and "by index" in n for n in notices), notices
    result = cli("data", "check", tmp_path, "--json", "--palette-by-colour")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["encoding"] == "palette-by-colour"
    assert any("swapped.png" in n and "by colour" in n for n in report["notices"]), report["notices"]



def test_evaluate_reads_palette_masks_as_the_model_was_trained(tmp_path):
    keras = pytest.importorskip("keras")
    from segcli.evaluation import evaluate
    from segcli.modelfile import load_model, save_model

    data = tmp_path / "data"
    palette_dataset(data, {"v0": PERMUTED, "v1": PERMUTED})
    labels = np.zeros((8, 8), np.uint8)
    labels[:, 6:] = 1  # entry 0 (c's colour) on 48 pixels, entry 1 (a's colour) on 16
    for name in ("v0", "v1"):
        write_mask_png(data / "masks" / f"{name}.png", labels, PERMUTED)
    inputs = keras.Input((None, None, 3))  # predicts class 0 (a) everywhere
    conv = keras.layers.Conv2D(3, 1, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant([9, 0, 0]))
    model = keras.Model(inputs, keras.layers.Softmax()(conv(inputs)))
    save_model(model, tmp_path / "plain.keras", THREE, {"recipe": {"data": {"val_fraction": 0.5}}})
    save_model(model, tmp_path / "by_colour.keras", THREE,
               {"recipe": {"data": {"val_fraction": 0.5, "palette_by_colour": True}}})

    def accuracy(path, **kwargs):
        return evaluate(load_model(path), data, "val", tutorial=False, **kwargs)["pixel_accuracy"]

    assert accuracy(tmp_path / "plain.keras") == pytest.approx(48 / 64)  # by index: entry 0 is a
    assert accuracy(tmp_path / "plain.keras", palette_by_colour=True) == pytest.approx(16 / 64)  # entry 1 is a
    assert accuracy(tmp_path / "by_colour.keras") == pytest.approx(16 / 64)  # as the model was trained
    assert accuracy(tmp_path / "by_colour.keras", palette_by_colour=False) == pytest.approx(48 / 64)
