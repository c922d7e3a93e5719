"""Sizes that cannot fit: training sizes and model knobs refused before anything is written (segcli.training.budget);
image and mask files over the pixel bound refused from their headers (segcli.data.imageio); `data check` in
bounded memory on any file size."""

import re

import pytest
from conftest import tiny_recipe_text

from segcli import recipe as recipes
from segcli.errors import SegcliError
from segcli.recipe.recipefiles import shipped_recipes
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


@pytest.mark.parametrize("name", shipped_recipes())
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


# --- image and mask files: pixel bound from the header, data check in bounded memory, libraries' lines kept off ---

import json  # noqa: E402
import os  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from segcli.data import ClassMap  # noqa: E402
from segcli.data.headers import MAX_PIXELS, check_pixels, image_size  # noqa: E402
from segcli.errors import DataError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TWO = ClassMap(("a", "b"), ((10, 10, 10), (200, 200, 200)), ignore_index=255)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def grey_png(path, width, height, rows=None):
    """A constant 8-bit grey PNG declaring width x height and holding `rows` rows of it (all by default),
    compressed a row at a time: 30000x30000 is a few hundred KB and never 900 MB in the test's memory."""
    packer, row, parts = zlib.compressobj(9), b"\x00" * (width + 1), []
    for _ in range(height if rows is None else rows):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b""))
    return path


def dataset(root, image=None, mask=None):
    """images/ and masks/ a.png (16x24, classes 0 and 1) and b.png: 16x24 too unless given (a function writing
    the file)."""
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    small_image = lambda p: grey_png(p, 24, 16)  # noqa: E731
    small_mask = lambda p: cv2.imwrite(str(p), np.resize(np.array([0, 1], np.uint8), (16, 24)))  # noqa: E731
    for name, write_image, write_mask in (("a", small_image, small_mask), ("b", image or small_image,
                                                                          mask or small_mask)):
        write_image(root / "images" / f"{name}.png")
        write_mask(root / "masks" / f"{name}.png")
    TWO.save(root / "classes.json")
    return root


PEAK = ("import resource, subprocess, sys\n"
        "proc = subprocess.run([sys.executable, '-m', 'segcli', 'data', 'check', sys.argv[1], '--val-fraction', '0'],"
        " capture_output=True, text=True, timeout=120)\n"
        "print(proc.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.stdout.write(proc.stdout); sys.stderr.write(proc.stderr)\n")


def data_check_child(root, **env):
    """(exit code, peak RSS of `segcli data check` in MB, its stdout, its stderr), run as a child process."""
    proc = subprocess.run([sys.executable, "-c", PEAK, str(root)], capture_output=True, text=True, timeout=180,
                          cwd=ROOT, env={**os.environ, **env})
    first, _, rest = proc.stdout.partition("\n")
    code, peak_kb = (int(x) for x in first.split())
    return code, peak_kb / 1024, rest, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("which", ["mask", "image"])
def test_data_check_of_a_30000x30000_file_stays_under_2_gb_and_names_it(tmp_path, which):
    huge = {which: lambda p: grey_png(p, 30000, 30000)}
    code, peak_mb, out, err = data_check_child(dataset(tmp_path / "ds", **huge))
    assert code == 1, out + err
    assert peak_mb < 2048, f"data check peaked at {peak_mb:.0f} MB"
    assert f"{which}s/b.png" in " ".join(out.split()).replace(" ", ""), out
    assert "30000x30000 pixels (900,000,000) is more than the 67,108,864" in " ".join(out.split()), out
    assert "SEGCLI_MAX_PIXELS" in " ".join(out.split())


def test_the_bound_is_set_by_segcli_max_pixels(tmp_path, cli, monkeypatch):
    root = dataset(tmp_path / "ds", image=lambda p: grey_png(p, 48, 32),
                   mask=lambda p: cv2.imwrite(str(p), np.resize(np.array([0, 1], np.uint8), (32, 48))))
    assert cli("data", "check", root, "--val-fraction", "0").exit_code == 0
    monkeypatch.setenv("SEGCLI_MAX_PIXELS", "1000")
    result = cli("data", "check", root, "--val-fraction", "0", "--json")
    problems = {Path(p["path"]).parent.name: p["problem"] for p in json.loads(result.stdout)["problems"]}
    assert result.exit_code == 1 and set(problems) == {"images", "masks"}, result.output
    assert all("32x48 pixels (1,536) is more than the 1,000" in text for text in problems.values())
    monkeypatch.setenv("SEGCLI_MAX_PIXELS", "lots")
    result = cli("data", "check", root, "--val-fraction", "0")
    assert result.exit_code == 2 and "SEGCLI_MAX_PIXELS must be a positive whole number" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_truncated_png_is_segclis_one_problem_and_no_libpng_line(tmp_path):
    root = dataset(tmp_path / "ds", mask=lambda p: grey_png(p, 1000, 1000, rows=10))
    code, _, out, err = data_check_child(root)
    assert code == 1 and "corrupt, truncated or not an image" in out, out + err
    assert "libpng" not in err and "libpng" not in out, err


def test_a_declared_30000x30000_png_holding_10_rows_is_one_line(tmp_path):
    root = dataset(tmp_path / "ds", mask=lambda p: grey_png(p, 30000, 30000, rows=10))
    code, _, out, err = data_check_child(root)
    assert code == 1 and "30000x30000 pixels" in out, out + err
    assert "libpng" not in err + out


def test_other_stderr_lines_written_while_decoding_still_reach_the_terminal(tmp_path):
    grey_png(tmp_path / "t.png", 100, 100, rows=3)
    script = ("import os, threading\nfrom segcli.data.imageio import read_label_png\nfrom segcli.errors import "
              "DataError\nimport segcli.data.imageio as io\nreal = io.cv2.imread\n"
              "def noisy(*a):\n    os.write(2, b'another thread\\n')\n    return real(*a)\nio.cv2.imread = noisy\n"
              f"try:\n    read_label_png({str(tmp_path / 't.png')!r})\nexcept DataError as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert "corrupt" in proc.stdout and "another thread" in proc.stderr and "libpng" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".gif", ".webp", ".tif"])
def test_image_size_reads_the_header_of_each_format(tmp_path, ext):
    path = tmp_path / f"x{ext}"
    assert cv2.imwrite(str(path), np.full((17, 23, 3), 99, np.uint8))
    assert image_size(path) == (17, 23)
    check_pixels(path)
    with pytest.raises(DataError, match=r"17x23 pixels \(391\) is more than the 390"):
        check_pixels(path, limit=390)
    assert MAX_PIXELS == 2 ** 26
