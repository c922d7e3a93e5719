"""The daily workflow end to end, as a user runs it: train on sample_data, predict an odd-sized image with
the trained model, overlay, evaluate."""

import json

import cv2
import numpy as np
import pytest
from conftest import tiny_recipe


@pytest.mark.slow
def test_train_predict_overlay_evaluate(cli, sample_data, tmp_path):
    recipe = tiny_recipe(tmp_path, epochs=1, lr=None)
    run = tmp_path / "run"
    assert cli("train", "unet", sample_data, "--recipe", recipe, "--out", run).exit_code == 0

    # an image of odd size, not a multiple of the output stride
    image = cv2.imread(str(next((sample_data / "val").glob("*.png"))))[:97, :131]
    odd = tmp_path / "odd.png"
    cv2.imwrite(str(odd), image)
    result = cli("predict", run / "best.keras", odd, "--overlay", "--out", tmp_path / "pred")
    assert result.exit_code == 0, result.output
    mask = cv2.imread(str(tmp_path / "pred" / "odd.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape[:2] == (97, 131)
    overlay = cv2.imread(str(tmp_path / "pred" / "odd_overlay.png"))
    assert overlay.shape[1] == 131 and overlay.shape[0] >= 97

    result = cli("overlay", odd, tmp_path / "pred" / "odd.png", "--panel", "--out", tmp_path / "panel.png",
                 "--classes", sample_data / "classes.json")
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(tmp_path / "panel.png")).shape[1] == 3 * 131

    result = cli("evaluate", run / "best.keras", sample_data, "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert 0 <= scores["pixel_accuracy"] <= 1 and 0 <= scores["miou"] <= 1
    assert scores["images"] == 10 and len(scores["per_class"]) == 11
    # the run's own final evaluation of best.keras is the same computation
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["evaluation"]["miou"] == pytest.approx(scores["miou"])
    assert np.isfinite(metrics["evaluation"]["tutorial_pixel_accuracy"])
