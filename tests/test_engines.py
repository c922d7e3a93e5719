"""segcli.inference.engines: exported models (ONNX, OpenVINO IR, TFLite, SavedModel) predict and evaluate as the
.keras does, through the library and the CLI; a missing engine is one line naming its extra."""

import json
import shutil

import cv2
import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")  # the exports are written on the tensorflow backend

import segcli.export.guards as export_guards  # noqa: E402
import segcli.inference.engines as engines  # noqa: E402
from segcli.data import ClassMap, read_label_png, write_image  # noqa: E402
from segcli.export import export_model  # noqa: E402
from segcli.inference import iter_predictions  # noqa: E402
from segcli.inference.engines import load_predictor  # noqa: E402
from segcli.modelfile import save_model  # noqa: E402
from segcli.models import build_model  # noqa: E402

TINY = dict(depth=2, base_filters=4, convs_per_block=1)  # output stride 4
CLASSES = ClassMap(("road", "car", "sky"), ((128, 64, 128), (64, 0, 128), (128, 128, 128)), ignore_index=255)
# an export per format: the file, the engine that runs it, the package it needs
FORMATS = {"onnx": ("model.onnx", "onnxruntime"), "openvino": ("model.xml", "openvino"),
           "tflite": ("model.tflite", "tflite"), "savedmodel": ("model_savedmodel", "savedmodel")}
# odd sizes (padded to the stride, cropped back) and one past the tile (tiled), as predict meets them
SIZES = [(37, 53), (64, 96), (70, 45)]


def needs(fmt: str):
    engine = FORMATS[fmt][1]
    missing = not engines.installed(engine) or (fmt == "onnx" and export_guards.missing_onnx_packages())
    return pytest.mark.skipif(bool(missing), reason=f"{engines.ENGINES[engine][0]} not installed: "
                                                     f"{engines.install_line(engine)}")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """A tiny U-Net saved as .keras and exported to each installed format, side by side (one classes.json)."""
    root = tmp_path_factory.mktemp("engines")
    keras.utils.set_random_seed(0)
    save_model(build_model("unet", 3, **TINY), root / "model.keras", CLASSES)
    made = {}
    for fmt, (name, engine) in FORMATS.items():
        if engines.installed(engine) and not (fmt == "onnx" and export_guards.missing_onnx_packages()):
            export_model(root / "model.keras", fmt, root / name)
            made[fmt] = root / name
    return root, made


def _images():
    rng = np.random.default_rng(1)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in SIZES]


def _labels(loaded, images, tile=64):
    return [labels for _, _, labels, _ in iter_predictions(loaded.model, enumerate(images), tile=tile, overlap=16,
                                                           stride=loaded.output_stride, batch_size=2)]


@pytest.mark.parametrize("fmt", [pytest.param(f, marks=needs(f)) for f in FORMATS])
def test_each_engine_gives_the_keras_masks_with_the_classes_that_travel(exports, fmt):
    root, made = exports
    keras_model = load_predictor(root / "model.keras", "float32")
    loaded = load_predictor(made[fmt], "float32")
    assert loaded.meta["engine"] == FORMATS[fmt][1]
    assert loaded.output_stride == keras_model.output_stride == 4  # found by running the export
    assert loaded.classes.to_dict() == CLASSES.to_dict()  # classes.json travelled with the export
    images = _images()
    for ref, got in zip(_labels(keras_model, images), _labels(loaded, images)):
        assert got.shape == ref.shape
        # float32 on both sides; only a pixel whose two top logits tie within rounding may differ
        assert np.mean(got == ref) >= 0.999


@needs("onnx")
@needs("openvino")
def test_openvino_runs_an_onnx_file_with_engine_openvino(exports):
    root, made = exports
    ref = _labels(load_predictor(root / "model.keras", "float32"), _images())
    loaded = load_predictor(made["onnx"], "float32", engine="openvino")
    assert loaded.meta["engine"] == "openvino"
    for a, b in zip(ref, _labels(loaded, _images())):
        assert np.mean(a == b) >= 0.999


@needs("tflite")
def test_a_fixed_size_export_predicts_any_size_padded_or_in_windows(exports, tmp_path):
    root, _ = exports
    fixed = tmp_path / "fixed.tflite"
    shutil.copy(root / "classes.json", tmp_path / "classes.json")
    result = export_model(root / "model.keras", "tflite", fixed, size=(32, 32))
    assert result.fixed_size == (32, 32)
    loaded = load_predictor(fixed, "float32")
    assert loaded.model.fixed_size == (32, 32)
    images = _images()  # smaller than 32 on no side, larger on both: every image runs in windows of 32x32
    small = np.random.default_rng(2).integers(0, 255, (20, 28, 3), dtype=np.uint8)  # padded up to 32x32
    keras_model = load_predictor(root / "model.keras", "float32")
    ref = _labels(keras_model, images)
    got = _labels(loaded, [small, *images])
    assert got[0].shape == small.shape[:2] and all(a.shape == b.shape for a, b in zip(ref, got[1:]))
    # padded: Keras' masks of the image reflected up to 32x32, cropped back
    padded = np.pad(small, ((0, 12), (0, 4), (0, 0)), mode="reflect")
    assert np.mean(_labels(keras_model, [padded])[0][:20, :28] == got[0]) >= 0.999
    # in windows: a pixel near a window's inner edge sees less context than in the whole image, so some differ
    # (a tiny net on noise: its labels flip easily)
    assert np.mean(np.concatenate([(a == b).ravel() for a, b in zip(ref, got[1:])])) >= 0.8


def _dataset(root):
    rng = np.random.default_rng(3)
    for split in ("train", "val"):
        (root / f"{split}annot").mkdir(parents=True)
        for i in range(2):
            write_image(root / split / f"{split}{i}.png", rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))
            cv2.imwrite(str(root / f"{split}annot" / f"{split}{i}.png"),
                        rng.integers(0, 3, (40, 56), dtype=np.uint8))
    CLASSES.save(root / "classes.json")
    return root


@needs("onnx")
def test_predict_and_evaluate_through_the_cli_on_an_export(cli, exports, tmp_path):
    root, made = exports
    data = _dataset(tmp_path / "ds")
    masks = {}
    for name, model in (("keras", root / "model.keras"), ("onnx", made["onnx"])):
        out = tmp_path / f"pred-{name}"
        result = cli("predict", model, data / "val", "--out", out, "--precision", "float32")
        assert result.exit_code == 0, result.output
        masks[name] = [read_label_png(out / f"val{i}.png") for i in range(2)]
    for a, b in zip(masks["keras"], masks["onnx"]):
        assert np.mean(a == b) >= 0.999
    scores = {}
    for name, model in (("keras", root / "model.keras"), ("onnx", made["onnx"])):
        result = cli("evaluate", model, data, "--json", "--precision", "float32")
        assert result.exit_code == 0, result.output
        scores[name] = json.loads(result.stdout)
    assert scores["onnx"]["miou"] == pytest.approx(scores["keras"]["miou"], abs=1e-3)
    assert scores["onnx"]["pixels"] == scores["keras"]["pixels"] > 0


@needs("onnx")
def test_an_engine_that_does_not_run_the_file_is_one_line(cli, exports, tmp_path):
    root, made = exports
    data = _dataset(tmp_path / "ds")
    result = cli("predict", made["onnx"], data / "val", "--engine", "tflite", "--out", tmp_path / "out")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "onnxruntime, openvino" in lines[0], result.output


@pytest.mark.parametrize("fmt", [pytest.param(f, marks=needs(f)) for f in ("openvino", "onnx", "tflite")])
def test_a_missing_engine_package_is_one_line_naming_the_extra(cli, exports, tmp_path, monkeypatch, fmt):
    root, made = exports
    data = _dataset(tmp_path / "ds")
    monkeypatch.setattr(engines, "find_spec", lambda name: None)  # as if no runtime were installed
    result = cli("predict", made[fmt], data / "val", "--out", tmp_path / "out")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    extra = engines.ENGINES[FORMATS[fmt][1]][2]
    assert len(lines) == 1 and f'pip install "segcli[{extra}]"' in lines[0], result.output
    assert not (tmp_path / "out").exists()


def test_openvino_export_without_the_package_names_the_extra(cli, exports, tmp_path, monkeypatch):
    root, _ = exports
    model = tmp_path / "model.keras"
    shutil.copy(root / "model.keras", model)
    monkeypatch.setattr(export_guards, "find_spec", lambda name: None if name == "openvino" else object())
    result = cli("export", model, "--format", "openvino")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'segcli[openvino]'" in lines[0], result.output
    assert not model.with_suffix(".xml").exists() and not model.with_suffix(".bin").exists()


@pytest.mark.slow
@needs("openvino")
def test_openvino_export_replaces_only_an_earlier_export(cli, exports, tmp_path):
    root, _ = exports
    model = tmp_path / "model.keras"
    shutil.copy(root / "model.keras", model)
    result = cli("export", model, "--format", "openvino")
    assert result.exit_code == 0, result.output
    assert "OpenVINO IR" in result.output and "check vs Keras" in result.output
    assert model.with_suffix(".bin").is_file() and (tmp_path / "classes.json").is_file()
    again = cli("export", model, "--format", "openvino")
    assert again.exit_code == 2 and "--force" in again.output
    assert cli("export", model, "--format", "openvino", "--force").exit_code == 0
    users = tmp_path / "users.xml"
    users.write_text("<?xml version='1.0'?><notes/>")
    refused = cli("export", model, "--format", "openvino", "--out", users, "--force")
    assert refused.exit_code == 2 and users.read_text() == "<?xml version='1.0'?><notes/>"


@pytest.mark.slow
def test_bench_prints_a_predict_row_per_installed_engine_on_the_same_images(cli, tmp_path, monkeypatch):
    from segcli import bench

    others = ",".join(s for s in bench.SECTIONS if s != "engines")
    missing = "tflite"  # one engine as if not installed: its row gives way to its install line
    real = engines.installed
    monkeypatch.setattr(engines, "installed", lambda name: name != missing and real(name))
    out = tmp_path / "bench.json"
    result = cli("bench", "--quick", "--models", "lambda-unet", "--precisions", "float32", "--skip", others,
                 "--json", out)
    assert result.exit_code == 0, result.output
    assert "predict images/s per engine (lambda-unet, 60x80, batch 4, float32)" in result.stdout
    doc = json.loads(out.read_text())["engines"]
    rows = {row["engine"]: row for row in doc["rows"]}
    expected = ["Keras"] + [engines.ENGINES[e][0] for e in ("onnxruntime", "openvino")
                            if real(e) and not (e == "onnxruntime" and export_guards.missing_onnx_packages())]
    assert list(rows) == expected
    for row in rows.values():
        assert row["images_per_sec"] > 0 and row["agreement"] >= 0.999  # the same images, the same masks
    assert rows["Keras"]["speedup"] == 1.0
    assert doc["not_installed"] == [engines.install_line("tflite")]


@needs("onnx")
def test_evaluate_reads_an_export_as_the_model_was_trained_from_the_record_beside_it(cli, tmp_path):
    """A model with void as a class (K + 1 outputs) and a dataset without classes.json: evaluate reads the masks
    with the classes the model was trained on, from the .keras file's record, which travels with the export."""
    keras.utils.set_random_seed(0)
    four = ClassMap((*CLASSES.names, "void"), (*CLASSES.colors, (0, 0, 0)), ignore_index=255)
    save_model(build_model("unet", 4, **TINY), tmp_path / "void.keras", four,
               meta={"dataset_classes": CLASSES.to_dict()})
    export_model(tmp_path / "void.keras", "onnx", tmp_path / "void.onnx")
    record = engines.export_meta(tmp_path / "void.onnx", "onnx")
    assert record["dataset_classes"] == CLASSES.to_dict() and record["output_stride"] == 4
    data = _dataset(tmp_path / "ds")
    (data / "classes.json").unlink()
    scores = {}
    for model in ("void.keras", "void.onnx"):
        result = cli("evaluate", tmp_path / model, data, "--json", "--precision", "float32")
        assert result.exit_code == 0, result.output
        scores[model] = json.loads(result.stdout)
    assert scores["void.onnx"]["classes"] == scores["void.keras"]["classes"] == list(CLASSES.names)
    assert scores["void.onnx"]["miou"] == pytest.approx(scores["void.keras"]["miou"], abs=1e-3)
