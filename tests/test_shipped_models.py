"""The ready-made CamVid models in models/: each fits the repository (15 MB at most), carries the metrics of the
run that made it and the command that rebuilds it, loads in plain Keras without segcli, predicts with
`segcli predict` right after install, and scores on CamVid val what its metrics say."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import ROOT, SAMPLE_DATA, child_result

MODELS_DIR = ROOT / "models"
MODELS = sorted(MODELS_DIR.glob("camvid-*.keras"), key=lambda path: path.stem)  # by name: "-" sorts before "."
NAMES = [path.stem for path in MODELS]


def metrics_of(model_path):
    return json.loads(model_path.with_suffix(".metrics.json").read_text())


def test_every_shipped_camvid_recipe_has_its_model_with_metrics_and_rebuild_command():
    """One model per CamVid recipe trained from scratch; the recipes on a Keras backbone are for ImageNet weights,
    which this project cannot fetch (models/README.md says what their random-init runs reached)."""
    from segcli import recipe as recipes
    from segcli.models.encoders import is_backbone

    scratch = sorted(p.stem for p in (ROOT / "segcli" / "resources" / "recipes").glob("camvid-*.toml")
                     if not is_backbone(recipes.resolve_for_model(None, p)[0].model.options.get("encoder")))
    assert scratch and NAMES == scratch, "models/ should hold one model per shipped from-scratch CamVid recipe"
    readme = (MODELS_DIR / "README.md").read_text()
    for path in MODELS:
        assert path.stat().st_size <= 15 * 2**20, f"{path.name}: over 15 MB"
        metrics = metrics_of(path)
        assert metrics["hardware"].startswith("CPU") and metrics["precision"] and metrics["backend"]
        # best.keras (the epoch picked on val), or model.keras (the last epoch) where the README says so
        assert 0 < metrics["evaluation"]["miou"] <= 1
        assert metrics["evaluation"]["model"] in ("best.keras", "model.keras")
        assert f"--recipe {path.stem} " in readme and f"models/{path.name}" in readme


@pytest.fixture(scope="module")
def plain_keras_loads() -> dict:
    """Each shipped model loaded by keras.saving.load_model in one process that never imports segcli (one
    Keras import for all of them): name -> its output channels, or the error it raised."""
    code = ("import json, sys, keras\nout = []\nfor path in sys.argv[1:]:\n"
            "    try:\n        out.append(keras.saving.load_model(path).output_shape[-1])\n"
            "    except Exception as exc:\n        out.append(repr(exc))\n"
            "print('RESULT' + json.dumps({'models': out, 'segcli': any(k.startswith('segcli') for k in sys.modules)}))")
    result = child_result(subprocess.run([sys.executable, "-c", code, *map(str, MODELS)], capture_output=True,
                                         text=True, timeout=600))
    assert result["segcli"] is False
    return dict(zip(NAMES, result["models"]))


@pytest.mark.parametrize("name", NAMES)
def test_shipped_model_loads_in_plain_keras(plain_keras_loads, name):
    """No segcli import: a user's own code (or another tool) can use the file."""
    assert plain_keras_loads[name] == len(metrics_of(MODELS_DIR / f"{name}.keras")["classes"])


@pytest.mark.parametrize("name", NAMES)
def test_segcli_predict_with_a_shipped_model(cli, tmp_path, name):
    image = sorted((SAMPLE_DATA / "val").glob("*.png"))[0]
    result = cli("predict", MODELS_DIR / f"{name}.keras", image, "--out", tmp_path / "preds")
    assert result.exit_code == 0, result.output
    from PIL import Image  # (matplotlib's dependency) reads the palette PNG's indices, which OpenCV turns to colours

    mask = np.asarray(Image.open(tmp_path / "preds" / image.name))
    height, width = cv2.imread(str(image)).shape[:2]
    assert mask.shape == (height, width)
    # the image is a street scene: the model finds more than one class in it, each one of its classes
    labels = set(np.unique(mask).tolist())
    assert len(labels) > 1 and labels <= set(range(len(metrics_of(MODELS_DIR / f"{name}.keras")["classes"])))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_shipped_model_scores_its_metrics_on_camvid_val(cli, camvid_dir, name):
    path = MODELS_DIR / f"{name}.keras"
    # --no-tutorial: the asserted figures come from the first pass over val, the tutorial's crops would double it
    result = cli("evaluate", path, camvid_dir, "--json", "--precision", "float32", "--no-tutorial")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    expected = metrics_of(path)["evaluation"]
    assert scores["miou"] == pytest.approx(expected["miou"], abs=2e-3)
    assert scores["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"], abs=2e-3)
