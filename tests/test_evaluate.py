"""segcli.evaluation and `segcli evaluate`: a constant-prediction model on hand-made masks with known scores."""

import csv
import json

import cv2
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from segcli.data import ClassMap, write_image  # noqa: E402
from segcli.errors import SegcliError  # noqa: E402
from segcli.evaluation import confusion_counts, evaluate  # noqa: E402
from segcli.modelfile import LoadedModel, load_model, save_model  # noqa: E402

THREE = ClassMap(("a", "b", "c"), ((200, 0, 0), (0, 200, 0), (0, 0, 200)), ignore_index=255)
TWO = ClassMap(("a", "b"), ((200, 0, 0), (0, 200, 0)), ignore_index=255)


def constant_model(num_classes: int, predicted: int) -> keras.Model:
    """Predicts `predicted` everywhere: a 1x1 conv with a zero kernel and a one-hot bias."""
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(num_classes, 1, name="score")
    x = conv(inputs)
    bias = np.zeros(num_classes, np.float32)
    bias[predicted] = 5.0
    conv.set_weights([np.zeros((1, 1, 3, num_classes), np.float32), bias])
    outputs = keras.layers.Activation("linear", dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs)


def known_mask() -> np.ndarray:
    """40x48 labels by columns: 0..11 void (255), 12..23 class 1, 24..47 class 0 (class 2 absent).

    Shares of all pixels: void 1/4, class 1 1/4, class 0 1/2. Columns survive the tutorial's resize
    (short side 40 -> 400, width 480) and its 368x480 centre crop unchanged in proportion.
    """
    mask = np.zeros((40, 48), np.uint8)
    mask[:, :12] = 255
    mask[:, 12:24] = 1
    return mask


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "ds"
    rng = np.random.default_rng(0)
    for split, n in (("train", 1), ("val", 2)):
        (root / f"{split}annot").mkdir(parents=True)
        for i in range(n):
            write_image(root / split / f"{split}{i}.png", rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
            cv2.imwrite(str(root / f"{split}annot" / f"{split}{i}.png"), known_mask())  # an index mask
    THREE.save(root / "classes.json")
    TWO.save(tmp_path / "two.json")
    return root


def loaded(model, classes):
    return LoadedModel(model=model, classes=classes, output_stride=1, meta={}, path=None)


def test_confusion_counts_excludes_ignore():
    truth = np.array([[0, 1, 255], [2, 0, 7]])
    pred = np.array([[0, 0, 1], [2, 1, 0]])
    cm = confusion_counts(truth, pred, 3, 255)
    assert cm.sum() == 4  # 255 (ignore) and 7 (not a class) left out
    assert cm.tolist() == [[1, 1, 0], [1, 0, 0], [0, 0, 1]]


def test_known_iou_with_ignore_excluded(dataset, tmp_path):
    result = evaluate(loaded(constant_model(3, 0), THREE), dataset, "val", out_dir=tmp_path / "report")
    # labelled pixels: class 0 = 2/3, class 1 = 1/3; everything predicted 0
    assert result["pixel_accuracy"] == pytest.approx(2 / 3)  # 1/2 if void pixels were counted
    iou = {row["name"]: row["iou"] for row in result["per_class"]}
    assert iou["a"] == pytest.approx(2 / 3) and iou["b"] == 0.0 and iou["c"] is None  # c occurs nowhere
    assert result["miou"] == pytest.approx(1 / 3)
    assert [row["accuracy"] for row in result["per_class"]] == [1.0, 0.0, None]
    assert result["pixels"] == 2 * 40 * 36 and result["ignored_pixels"] == 2 * 40 * 12
    # the tutorial's figure counts void, which this model (no void class) always gets wrong
    tut = result["tutorial"]
    assert tut["pixel_accuracy_void_counted"] == pytest.approx(0.5)
    assert tut["pixels"] == 2 * 368 * 480 and tut["void_pixels"] == 2 * 368 * 120
    assert not tut["model_has_void_class"] and "tutorial" in tut["label"]

    report = tmp_path / "report"
    rows = list(csv.reader(open(report / "confusion.csv")))
    assert rows[0] == ["truth \\ prediction", "a", "b", "c"]
    assert rows[1] == ["a", str(2 * 40 * 24), "0", "0"] and rows[2] == ["b", str(2 * 40 * 12), "0", "0"]
    assert (report / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((report / "evaluation.json").read_text())["miou"] == pytest.approx(1 / 3)


def test_void_class_model(dataset):
    two = dataset.parent / "two.json"
    # K + 1 outputs: class 2 is void. Predicting void everywhere is right on the void quarter only ...
    result = evaluate(loaded(constant_model(3, 2), TWO.with_void_as_class()), dataset, "val", classes_file=two)
    assert result["tutorial"]["pixel_accuracy_void_counted"] == pytest.approx(0.25)
    assert result["tutorial"]["model_has_void_class"]
    # ... and wrong on every labelled pixel, which is all the benchmark figures look at
    assert result["pixel_accuracy"] == 0.0 and result["miou"] == 0.0
    assert [row["name"] for row in result["per_class"]] == ["a", "b"]
    result = evaluate(loaded(constant_model(3, 0), TWO.with_void_as_class()), dataset, "val", classes_file=two,
                      tutorial=True)
    assert result["tutorial"]["pixel_accuracy_void_counted"] == pytest.approx(0.5)
    assert result["pixel_accuracy"] == pytest.approx(2 / 3)


def test_class_count_mismatch(dataset):
    with pytest.raises(SegcliError, match="5 classes but the dataset has 3"):
        evaluate(loaded(constant_model(5, 0), ClassMap(tuple("vwxyz"), ((1, 1, 1),) * 5)), dataset, tutorial=False)
    with pytest.raises(SegcliError, match="no 'test' split"):
        evaluate(loaded(constant_model(3, 0), THREE), dataset, "test", tutorial=False)


def test_cli_evaluate_json(cli, dataset, tmp_path):
    path = tmp_path / "const.keras"
    save_model(constant_model(3, 0), path, THREE)
    assert load_model(path).output_stride == 1
    result = cli("evaluate", path, dataset, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["miou"] == pytest.approx(1 / 3) and data["split"] == "val"
    result = cli("evaluate", path, dataset, "--json", "--precision", "float32")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["confusion"] == data["confusion"]
    assert data["tutorial"]["pixel_accuracy_void_counted"] == pytest.approx(1 / 2)  # on by default
    result = cli("evaluate", path, dataset, "--out", tmp_path / "rep")
    assert result.exit_code == 0, result.output
    assert "mIoU" in result.stdout and "tutorial" in result.stdout and (tmp_path / "rep" / "confusion.png").is_file()
    result = cli("evaluate", path, dataset, "--no-tutorial", "--out", tmp_path / "rep2")  # one pass: no such figure
    assert result.exit_code == 0, result.output
    assert "mIoU" in result.stdout and "tutorial" not in result.stdout
    saved = json.loads((tmp_path / "rep2" / "evaluation.json").read_text())
    assert saved["tutorial"] is None and saved["confusion"] == data["confusion"]
    result = cli("evaluate", tmp_path / "missing.keras", dataset)
    assert result.exit_code == 2 and "missing.keras" in result.stderr and "Traceback" not in result.output


def neighbour_model() -> keras.Model:
    """Class k scores the k-th colour channel of the pixel to the right (0 past the edge): the mirrored pass of
    flip TTA scores the pixel to the left instead."""
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(3, (1, 3), padding="same", name="score")
    outputs = conv(inputs)
    kernel = np.zeros((1, 3, 3, 3), np.float32)
    kernel[0, 2] = 0.05 * np.eye(3, dtype=np.float32)
    conv.set_weights([kernel, np.zeros(3, np.float32)])
    return keras.Model(inputs, outputs)


def softmax(z):
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def test_evaluate_tta(dataset):
    """--tta flip scores the labels of the mean of the plain and the mirrored pass (by hand here: the right and the
    left neighbour's colours) and records the setting; the library checks a spec as the flag does."""
    from segcli.data import read_image

    model = neighbour_model()
    expected = np.zeros((3, 3), np.int64)
    for path in sorted((dataset / "val").iterdir()):
        padded = np.pad(0.05 * read_image(path).astype(np.float32), ((0, 0), (1, 1), (0, 0)))
        mean = (softmax(padded[:, 2:]) + softmax(padded[:, :-2])) / 2  # right neighbour, left neighbour
        expected += confusion_counts(known_mask(), mean.argmax(-1), 3, 255)
    plain = evaluate(loaded(model, THREE), dataset, tutorial=False)
    result = evaluate(loaded(model, THREE), dataset, tta="flip")
    assert result["confusion"] == expected.tolist() != plain["confusion"]
    assert result["tta"] == "flip" and result["tta_passes"] == 2 and result["tutorial"]["tta"] == "flip"
    assert plain["tta"] is None and plain["tta_passes"] == 1
    with pytest.raises(SegcliError, match="--tta"):
        evaluate(loaded(model, THREE), dataset, tta="mirror")


def test_cli_evaluate_tta_json(cli, dataset, tmp_path):
    path = tmp_path / "const.keras"
    save_model(constant_model(3, 0), path, THREE)
    result = cli("evaluate", path, dataset, "--tta", "flip,0.5", "--out", tmp_path / "rep", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["tta"] == "flip,0.5" and data["tta_passes"] == 4 and data["tutorial"]["tta"] == "flip,0.5"
    assert data["miou"] == pytest.approx(1 / 3)  # a constant prediction is the same under every flip and scale
    assert data["tutorial"]["pixel_accuracy_void_counted"] == pytest.approx(0.5)
    assert json.loads((tmp_path / "rep" / "evaluation.json").read_text())["tta"] == "flip,0.5"
    result = cli("evaluate", path, dataset, "--tta", "flip")
    assert result.exit_code == 0 and "test-time augmentation: flip (2 forward passes" in result.stdout
    result = cli("evaluate", path, dataset, "--tta", "flip,9")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "--tta" in result.stderr and "outside" in result.stderr


def test_cli_evaluate_success_writes_nothing_to_stderr(cli, dataset, tmp_path):
    path = tmp_path / "const.keras"
    save_model(constant_model(3, 0), path, THREE)
    result = cli("evaluate", path, dataset, "--out", tmp_path / "rep")
    assert result.exit_code == 0, result.output
    assert "mIoU" in result.stdout and result.stderr == ""  # no empty line from a progress bar on a file or pipe


def test_a_folder_without_classes_file_reads_masks_as_the_model_was_trained(dataset, tmp_path):
    """No classes.json beside the data: the masks are read with the classes the model's training recorded
    (its metadata's dataset_classes), void ignored, not classes inferred from the mask values (which would
    score void as a class); a model without that record, as before."""
    (dataset / "classes.json").unlink()
    model = constant_model(3, predicted=0)
    trained = evaluate(LoadedModel(model=model, classes=THREE, output_stride=1, path=None,
                                   meta={"dataset_classes": THREE.to_dict()}), dataset, tutorial=False)
    assert trained["miou"] == pytest.approx(1 / 3)  # as test_known_iou_with_ignore_excluded: void left out
    assert trained["ignored_pixels"] == 2 * 40 * 12
    assert any("the classes the model was trained with" in note for note in trained["notes"]), trained["notes"]
    inferred = evaluate(loaded(model, THREE), dataset, tutorial=False)  # no record: inferred from the values
    assert not any("the classes the model was trained with" in note for note in inferred["notes"])
