"""segcli export --format openvino --int8 --data DATA: NNCF's INT8 quantisation of the IR, calibrated on the
dataset's train images and checked by labels on its val images (segcli.export.int8)."""

import cv2
import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")  # the IR is written through TensorFlow

import segcli.export.guards as export_guards  # noqa: E402
import segcli.inference.engines as engines  # noqa: E402
from segcli.data import ClassMap, write_image  # noqa: E402
from segcli.errors import DataError  # noqa: E402
from segcli.export.int8 import _spread, dataset_images  # noqa: E402
from segcli.modelfile import save_model  # noqa: E402
from segcli.models import build_model  # noqa: E402

CLASSES = ClassMap(("road", "car", "sky"), ((128, 64, 128), (64, 0, 128), (128, 128, 128)), ignore_index=255)
TINY = dict(depth=2, base_filters=4, convs_per_block=1)  # output stride 4
needs_int8 = pytest.mark.skipif(bool(export_guards.missing_format_packages("openvino", "tensorflow", int8=True)[0]),
                                reason="openvino and nncf not installed: pip install 'segcli[int8]'")


def _dataset(root, n_train=5, n_val=2, size=(40, 56)):
    """Noise images (the tiny net's labels flip easily on them) with masks, in split folders."""
    rng = np.random.default_rng(3)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / f"{split}annot").mkdir(parents=True)
        for i in range(n):
            write_image(root / split / f"{split}{i}.png", rng.integers(0, 255, (*size, 3), dtype=np.uint8))
            cv2.imwrite(str(root / f"{split}annot" / f"{split}{i}.png"), rng.integers(0, 3, size, dtype=np.uint8))
    CLASSES.save(root / "classes.json")
    return root


@pytest.fixture
def model(tmp_path):
    keras.utils.set_random_seed(0)
    path = tmp_path / "model.keras"
    save_model(build_model("unet", 3, **TINY), path, CLASSES)
    return path


def _lines(result):
    return [line for line in result.output.splitlines() if line.strip()]


def test_calibration_images_are_spread_over_the_train_split_and_checked_on_val(tmp_path):
    data = _dataset(tmp_path / "ds", n_train=5)
    calibration, check, split = dataset_images(data, 3, CLASSES)
    assert [p.name for p in calibration] == ["train0.png", "train2.png", "train4.png"]  # a sequence's spread
    assert [p.name for p in check] == ["val0.png", "val1.png"] and split == "val"
    assert [p.name for p in dataset_images(data, 300, CLASSES)[0]] == [f"train{i}.png" for i in range(5)]
    assert _spread(list(range(100)), 3) == [0, 50, 99]


def test_a_dataset_without_val_is_checked_on_train_and_a_folder_without_pairs_is_one_line(tmp_path):
    data = _dataset(tmp_path / "ds", n_train=4, n_val=0)
    _, check, split = dataset_images(data, 2, CLASSES)
    assert split == "train" and len(check) == 4
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no dataset layout recognised"):
        dataset_images(empty, 2, CLASSES)


@needs_int8
def test_int8_export_is_quantised_checked_by_labels_and_predicts_as_reported(cli, model, tmp_path):
    data = _dataset(tmp_path / "ds")
    result = cli("export", model, "--format", "openvino", "--int8", "--data", data, "--calibration", "3")
    assert result.exit_code == 0, result.output
    out = tmp_path / "model-int8.xml"  # beside the float32 IR's default name, not over it
    assert "INT8" in result.stdout and "calibrated on 3 train images" in result.stdout
    assert out.is_file() and out.with_suffix(".bin").is_file() and not (tmp_path / "model.xml").exists()
    assert "FakeQuantize" in out.read_text()  # NNCF's INT8 quantisation, not a float32 copy
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    record = engines.export_meta(out, "openvino")["quantization"]
    assert record["precision"] == "int8" and record["calibration_images"] == 3 and record["check_split"] == "val"

    # the reported agreement is the INT8 IR's labels against Keras' on the val images, as predict runs them
    keras_model = engines.load_predictor(model, "float32").model
    int8 = engines.load_predictor(out, "float32")
    assert int8.meta["engine"] == "openvino" and int8.classes.to_dict() == CLASSES.to_dict()
    same = total = 0
    for image in sorted((data / "val").iterdir()):
        x = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)[None].astype(np.float32)  # 40x56: stride 4
        ref = np.asarray(keras_model(x, training=False)).argmax(-1)
        got = int8.model.run_batch(x).argmax(-1)
        same, total = same + np.count_nonzero(ref == got), total + ref.size
    assert record["label_agreement"] == pytest.approx(same / total, abs=1e-6)
    assert f"{100 * record['label_agreement']:.2f}% of the pixels of 2 val images" in result.stdout

    predicted = cli("predict", out, data / "val", "--out", tmp_path / "pred")
    assert predicted.exit_code == 0, predicted.output
    assert len(list((tmp_path / "pred").glob("*.png"))) == 2
    again = cli("export", model, "--format", "openvino", "--int8", "--data", data)
    assert again.exit_code == 2 and "--force" in again.output  # an earlier export is replaced only with --force


@pytest.mark.parametrize("args, message", [
    (["--format", "openvino", "--int8"], "--int8 needs --data DATA"),
    (["--format", "onnx", "--int8", "--data", "DATA"], "--int8 applies to --format openvino only"),
    (["--format", "openvino", "--data", "DATA"], "applies with --int8 only"),
    (["--format", "openvino", "--calibration", "5"], "applies with --int8 only"),
    (["--format", "openvino", "--int8", "--data", "nowhere"], "nowhere: no such file or directory"),
])
def test_bad_int8_usage_is_one_line_and_writes_nothing(cli, model, tmp_path, args, message):
    data = _dataset(tmp_path / "ds")
    result = cli("export", model, *[str(data) if a == "DATA" else a for a in args])
    assert result.exit_code == 2
    assert len(_lines(result)) == 1 and message in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "model.keras"]


def test_int8_without_nncf_names_the_extra(cli, model, tmp_path, monkeypatch):
    data = _dataset(tmp_path / "ds")
    monkeypatch.setattr(export_guards, "find_spec", lambda name: None if name == "nncf" else object())
    result = cli("export", model, "--format", "openvino", "--int8", "--data", data)
    assert result.exit_code == 2
    assert len(_lines(result)) == 1 and "nncf: pip install 'segcli[int8]'" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "model.keras"]


def test_on_another_backend_the_int8_command_is_repeated_whole(model):
    line = export_guards.backend_problem("openvino", "jax", model, int8_data="my data", calibration=50)
    assert line.endswith(f"export {model} --format openvino --int8 --data 'my data' --calibration 50"), line


def test_the_help_states_the_librarys_calibration_default(cli):
    from segcli.export.int8 import DEFAULT_CALIBRATION

    result = cli("export", "--help")
    text = " ".join(result.output.replace("│", " ").split())  # rich's box, unwrapped
    assert result.exit_code == 0 and f"default {DEFAULT_CALIBRATION}:" in text
