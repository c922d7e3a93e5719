"""segcli.inference and `segcli predict`: odd sizes, palette PNGs, inputs, overlays, probabilities, tiling."""

import struct
import zipfile

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from segcli.data import default_classes, read_label_png, write_image  # noqa: E402
from segcli.data.imageio import read_png_palette  # noqa: E402
from segcli.errors import DataError  # noqa: E402
from segcli.files import TMP_TAG  # noqa: E402
from segcli.inference import (_axis_tiles, _tile_geometry, needs_tiles, predict_files, predict_labels,  # noqa: E402
                              predict_logits, resolve_inputs)
from segcli.modelfile import load_model, save_model  # noqa: E402
from segcli.models import build_model  # noqa: E402

K = 3
# Tiled vs untiled on a 96x96 image (tile 64, overlap 16, a U-Net of output stride 4): the tiles only see
# part of each pixel's receptive field near their inner edges, so scores may differ slightly there.
TILE_LABEL_AGREEMENT = 0.99  # share of pixels with the same argmax label, at least
TILE_MAX_PROB_DIFF = 0.02  # largest absolute difference of any softmax probability, at most


def png_ihdr(path):
    data = open(path, "rb").read(33)
    width, height, depth, color_type = struct.unpack(">IIBB", data[16:26])
    return width, height, depth, color_type


def tiny_unet(seed=1, sharpen=30.0):
    """A depth-2 U-Net (output stride 4) with its class scores stretched, so labels are not near-ties."""
    keras.utils.set_random_seed(seed)
    model = build_model("unet", K, depth=2, base_filters=4, convs_per_block=1)
    score = model.get_layer("score")
    kernel, bias = score.get_weights()
    score.set_weights([kernel * sharpen, bias])
    return model


def make_image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 160, w)[None, :, None] + np.linspace(0, 60, h)[:, None, None]
    return np.clip(rng.integers(0, 90, (h, w, 3)) + ramp, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    save_model(tiny_unet(), path, default_classes(K, ["sky", "road", "car"]), {"model_name": "unet"})
    return path


@pytest.fixture(scope="module")
def loaded(model_file):
    return load_model(model_file)


def test_tile_geometry_cores_partition_the_axis():
    tile, overlap = _tile_geometry(16, 100, 20)
    assert (tile, overlap) == (96, 32)
    tiles = _axis_tiles(400, tile, overlap)
    assert tiles[0][2] == 0 and tiles[-1][3] == 400
    for (s, size, c0, c1), nxt in zip(tiles, tiles[1:] + [None]):
        assert s % 16 == 0 and size == 96 and s <= c0 < c1 <= s + size
        if nxt:
            assert c1 == nxt[2]  # cores touch: every pixel comes from exactly one tile
    assert _axis_tiles(48, 96, 32) == [(0, 48, 0, 48)]
    assert not needs_tiles(1020, 1000, stride=16, tile=1024) and needs_tiles(1025, 10, stride=16, tile=1024)


def test_odd_size_palette_mask(loaded, tmp_path):
    write_image(tmp_path / "odd.png", make_image(37, 53))
    records = predict_files(loaded, [tmp_path / "odd.png"], tmp_path / "out")
    mask = tmp_path / "out" / "odd.png"
    assert [r.mask for r in records] == [mask]
    width, height, depth, color_type = png_ihdr(mask)
    assert (height, width, depth, color_type) == (37, 53, 8, 3)  # palette PNG of the input's exact size
    palette = read_png_palette(mask)
    assert [tuple(c) for c in palette[:K].tolist()] == list(loaded.classes.colors)
    labels = read_label_png(mask)
    assert labels.shape == (37, 53) and labels.max() < K
    expected = predict_logits(loaded.model, make_image(37, 53), stride=loaded.output_stride).argmax(-1)
    assert (labels == expected).all()


def test_folder_glob_overlay_and_probabilities(loaded, tmp_path):
    src = tmp_path / "imgs"
    for i, (h, w) in enumerate([(32, 40), (32, 40), (21, 30)]):
        write_image(src / f"im{i}.png", make_image(h, w, seed=i))
    (src / "notes.txt").write_text("not an image")
    assert [p.name for p in resolve_inputs([src])] == ["im0.png", "im1.png", "im2.png"]
    assert [p.name for p in resolve_inputs([str(src / "im[01].png")])] == ["im0.png", "im1.png"]

    out = tmp_path / "out"
    records = predict_files(loaded, [src], out, overlay=True, probabilities=True, batch_size=2)
    assert [r.image.name for r in records] == ["im0.png", "im1.png", "im2.png"]
    for r, (h, w) in zip(records, [(32, 40), (32, 40), (21, 30)]):
        assert png_ihdr(r.mask)[:2] == (w, h)
        assert r.overlay == out / f"{r.image.stem}_overlay.png" and r.overlay.is_file()
        probs = np.load(r.probabilities)
        assert probs.dtype == np.float16 and probs.shape == (h, w, K)
        np.testing.assert_allclose(probs.astype(np.float32).sum(-1), 1.0, atol=5e-3)
        assert (probs.argmax(-1) == read_label_png(r.mask)).mean() > 0.99  # float16 may flip near-ties
    assert not [p for p in out.iterdir() if TMP_TAG in p.name]  # no temporary files left

    records = predict_files(loaded, [str(src / "*.png")], tmp_path / "out2")
    assert len(records) == 3 and records[0].overlay is None and records[0].probabilities is None


def test_tiled_equals_untiled(loaded):
    image = make_image(96, 96, seed=3)
    full = predict_logits(loaded.model, image, stride=4, tile=1024, softmax=True)
    tiled = predict_logits(loaded.model, image, stride=4, tile=64, overlap=16, softmax=True, batch_size=3)
    assert full.shape == tiled.shape == (96, 96, K)
    agreement = (full.argmax(-1) == tiled.argmax(-1)).mean()
    assert agreement >= TILE_LABEL_AGREEMENT
    assert np.abs(full - tiled).max() <= TILE_MAX_PROB_DIFF
    # the streaming path (labels + float16 probabilities) gives the same labels as the in-memory one
    probs = np.zeros((96, 96, K), np.float16)
    labels = predict_labels(loaded.model, image, stride=4, tile=64, overlap=16, probs_out=probs)
    assert labels.dtype == np.uint8 and (labels == tiled.argmax(-1)).all()
    assert np.abs(probs.astype(np.float32) - tiled).max() < 2e-3


def test_tiled_files_odd_size(loaded, tmp_path):
    write_image(tmp_path / "big.png", make_image(75, 141))
    rec, = predict_files(loaded, [tmp_path / "big.png"], tmp_path / "out", tile=32, overlap=8, probabilities=True)
    assert png_ihdr(rec.mask)[:2] == (141, 75)
    probs = np.load(rec.probabilities)  # written band by band (NpyRowWriter) as the tile rows finish
    assert probs.shape == (75, 141, K)
    expected = predict_logits(loaded.model, make_image(75, 141), stride=4, tile=32, overlap=8, softmax=True)
    assert np.abs(probs.astype(np.float32) - expected).max() < 2e-3  # float16 rounding
    assert (read_label_png(rec.mask) == expected.argmax(-1)).mean() > 0.99


def test_missing_and_corrupt_inputs(loaded, tmp_path):
    with pytest.raises(DataError, match="nope.png"):
        predict_files(loaded, [tmp_path / "nope.png"], tmp_path / "out")
    with pytest.raises(DataError, match="match"):
        predict_files(loaded, [str(tmp_path / "*.jpg")], tmp_path / "out")
    write_image(tmp_path / "a.png", make_image(16, 16))
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="b.png"):
        predict_files(loaded, [tmp_path / "a.png", tmp_path / "b.png"], tmp_path / "out", batch_size=1)
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name != ".segcli") == ["a.png"]  # nothing half-written


def test_cli_predict(cli, model_file, tmp_path):
    write_image(tmp_path / "x.png", make_image(20, 28))
    result = cli("predict", model_file, tmp_path / "x.png", "--out", tmp_path / "preds", "--overlay")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "preds" / "x.png").is_file() and (tmp_path / "preds" / "x_overlay.png").is_file()
    assert str(tmp_path / "preds") in result.stdout


def test_cli_predict_precision(cli, model_file, tmp_path):
    """float32, bf16 and fp16 (a GPU's default) runs of one model give (nearly) the same mask; an unknown
    precision is one line."""
    write_image(tmp_path / "x.png", make_image(40, 56))
    masks, probs = {}, {}
    for name in ("float32", "mixed_bfloat16", "mixed_float16"):
        result = cli("predict", model_file, tmp_path / "x.png", "--out", tmp_path / name, "--precision", name,
                     "--probabilities")
        assert result.exit_code == 0, result.output
        masks[name] = read_label_png(tmp_path / name / "x.png")
        probs[name] = np.load(tmp_path / name / "x_probs.npy").astype(np.float32)
    for name in ("mixed_bfloat16", "mixed_float16"):
        assert (masks["float32"] == masks[name]).mean() > 0.95, name
        assert 0 < np.abs(probs[name] - probs["float32"]).max() < 0.1, name  # it ran in that precision
    result = cli("predict", model_file, tmp_path / "x.png", "--out", tmp_path / "bad", "--precision", "fp8")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "valid: auto, float32" in result.stderr
    assert not (tmp_path / "bad").exists()


def test_cli_predict_missing_file(cli, model_file, tmp_path):
    result = cli("predict", model_file, tmp_path / "missing.png", "--out", tmp_path / "preds")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "missing.png" in result.stderr


def test_cli_predict_not_a_model(cli, tmp_path):
    fake = tmp_path / "notes.keras"
    fake.write_text("just some text\n")
    write_image(tmp_path / "x.png", make_image(8, 8))
    result = cli("predict", fake, tmp_path / "x.png")
    assert result.exit_code == 2
    assert "not a Keras model" in result.stderr and "Traceback" not in result.output
    broken = tmp_path / "broken.keras"
    with zipfile.ZipFile(broken, "w") as zf:
        zf.writestr("hello.txt", "no model here")
    result = cli("predict", broken, tmp_path / "x.png")
    assert result.exit_code == 2 and "broken.keras" in result.stderr and "Traceback" not in result.output
