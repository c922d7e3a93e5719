"""Sizes that cannot fit: training sizes and model knobs refused before anything is written (segcli.training.budget);
image and mask files over the pixel bound refused from their headers (segcli.data.imageio); `data check` in
bounded memory on any file size."""

import re

import pytest
from conftest import tiny_recipe_text

from segcli import recipe as recipes
from segcli.errors import SegcliError
from segcli.training.budget import GB, check_training_fits, estimate_training_memory


def _recipe(tmp_path, options="depth = 2\nbase_filters = 4", size="[64, 64]"):
    text = tiny_recipe_text(epochs=1).replace("depth = 2\nbase_filters = 4", options).replace("[64, 64]", size)
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("options, size, said", [
    ("depth = 2\nbase_filters = 4", "[100000, 100000]", "needs about"),
    ("depth = 1000\nbase_filters = 4", "[64, 64]", "depth 1000"),
    ("depth = 2\nbase_filters = 100000", "[64, 64]", "needs about"),
    ("depth = 7\nbase_filters = 4", "[64, 64]", "depth 7"),
])
def test_a_training_that_cannot_fit_is_one_line_and_leaves_no_run_folder(cli, sample_data, tmp_path, options, size,
                                                                          said):
    out = tmp_path / "run"
    result = cli("train", "unet", sample_data, "--recipe", _recipe(tmp_path, options, size), "--out", out)
    assert result.exit_code == 2, result.output
    assert said in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists()


def test_the_size_flag_is_checked_too(cli, sample_data, tmp_path):
    out = tmp_path / "run"
    result = cli("train", "unet", sample_data, "--recipe", _recipe(tmp_path), "--size", "100000x100000",
                 "--out", out)
    assert result.exit_code == 2 and "GB of memory available" in result.stderr, result.output
    assert not out.exists()


def test_the_estimate_refuses_over_the_memory_given_and_names_both():
    with pytest.raises(SegcliError) as caught:
        check_training_fits("unet", 12, {"depth": 2, "base_filters": 4}, (64, 64), 8, available=GB // 2)
    text = str(caught.value)
    assert re.search(r"needs about 1\.\d GB \(9,720 parameters", text) and "0.5 GB of memory available" in text


@pytest.mark.parametrize("name", ["camvid-fcn", "camvid-fcn-long", "camvid-fcn-balanced", "camvid-unet",
                                  "lambda-unet", "lambda-fcn", "sample-unet", "camvid-unet-mobilenetv3large"])
def test_every_shipped_recipe_fits_a_24_gb_machine(name):
    recipe, _ = recipes.resolve_for_model(None, name, None)
    estimate = check_training_fits(recipe.model.name, 12, recipe.model.options, recipe.data.size,
                                   recipe.train.batch_size, available=20 * GB)
    assert estimate.bytes < 10 * GB and estimate.params > 100_000


def test_the_estimate_grows_with_batch_and_size():
    small = estimate_training_memory("unet", 12, {"depth": 2, "base_filters": 4}, (64, 64), 8)
    assert estimate_training_memory("unet", 12, {"depth": 2, "base_filters": 4}, (64, 64), 16).bytes > small.bytes
    big = estimate_training_memory("unet", 12, {"depth": 2, "base_filters": 4}, (128, 128), 8)
    assert big.activations_per_image == 4 * small.activations_per_image and big.params == small.params
