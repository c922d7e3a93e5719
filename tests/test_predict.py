"""segcli.inference and `segcli predict`: odd sizes, palette PNGs, inputs, overlays, probabilities, tiling."""

import struct
import zipfile

import cv2
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from segcli.data import default_classes, read_label_png, write_image  # noqa: E402
from segcli.data.imageio import read_png_palette  # noqa: E402
from segcli.errors import DataError, SegcliError  # noqa: E402
from segcli.files import TMP_TAG  # noqa: E402
from segcli.inference import (needs_tiles, parse_tta, predict_batch, predict_files, predict_labels,  # noqa: E402
                              predict_logits, resolve_inputs)
from segcli.inference.arrays import axis_tiles, tile_geometry  # noqa: E402
from segcli.inference.tta import softmax  # noqa: E402
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
    tile, overlap = tile_geometry(16, 100, 20)
    assert (tile, overlap) == (96, 32)
    tiles = axis_tiles(400, tile, overlap)
    assert tiles[0][2] == 0 and tiles[-1][3] == 400
    for (s, size, c0, c1), nxt in zip(tiles, tiles[1:] + [None]):
        assert s % 16 == 0 and size == 96 and s <= c0 < c1 <= s + size
        if nxt:
            assert c1 == nxt[2]  # cores touch: every pixel comes from exactly one tile
    assert axis_tiles(48, 96, 32) == [(0, 48, 0, 48)]
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
    assert len(result.stderr.strip().splitlines()) == 1 and "must be one of auto, float32" in result.stderr
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


# --- test-time augmentation ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def loaded32(model_file):
    """The model in float32 whatever this machine's auto precision: hand computations match to 1e-5."""
    return load_model(model_file, "float32")


def model_probs(model, image):
    """softmax(model(image)) by hand, for an image whose sides are multiples of the output stride (4)."""
    logits = np.asarray(model(np.ascontiguousarray(image)[None].astype(np.float32), training=False))[0]
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def test_tta_spec():
    tta = parse_tta(" Flip, 1.25,0.75,1 ")
    assert str(tta) == "flip,1.25,0.75" and tta.passes == [(1.0, False), (1.0, True), (1.25, False), (1.25, True),
                                                           (0.75, False), (0.75, True)]
    assert parse_tta("0.5").passes == [(1.0, False), (0.5, False)] and parse_tta(tta) is tta
    assert parse_tta(None) is None and parse_tta("none") is None
    for bad in ("flop", "flip,0", "1", "flip,x2"):
        with pytest.raises(SegcliError, match="--tta"):
            parse_tta(bad)


def test_tta_matches_hand_computation(loaded32):
    """flip: the mean of the plain and the mirrored pass (mirrored back); a scale: cv2-resized in, the probabilities
    cv2-resized back to the image's size; the single-image and the batched path agree."""
    model, image = loaded32.model, make_image(32, 48, seed=5)
    plain = model_probs(model, image)
    mirrored = model_probs(model, image[:, ::-1])[:, ::-1]
    assert np.abs(mirrored - plain).max() > 0.05  # the model is not mirror-symmetric: the flip pass counts
    got = predict_logits(model, image, stride=4, softmax=True, tta="flip")
    np.testing.assert_allclose(got, (plain + mirrored) / 2, atol=1e-5)

    small = cv2.resize(image, (36, 24), interpolation=cv2.INTER_LINEAR)  # scale 0.75
    passes = [plain, mirrored, cv2.resize(model_probs(model, small), (48, 32), interpolation=cv2.INTER_LINEAR),
              cv2.resize(np.ascontiguousarray(model_probs(model, small[:, ::-1])[:, ::-1]), (48, 32),
                         interpolation=cv2.INTER_LINEAR)]
    expected = np.mean(passes, axis=0)
    got = predict_logits(model, image, stride=4, softmax=True, tta="flip,0.75")
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.abs(got - (plain + mirrored) / 2).max() > 1e-3  # the scale pass changed the result
    batch = predict_batch(model, np.stack([image, make_image(32, 48, seed=6)]), stride=4, tta="flip,0.75")
    assert batch.shape == (2, 32, 48, K)
    np.testing.assert_allclose(batch[0], expected, atol=1e-5)
    with pytest.raises(SegcliError, match="softmax=True"):
        predict_logits(model, image, stride=4, tta="flip")


def test_no_tta_is_unchanged(loaded, tmp_path):
    """Without --tta the plain path runs: probabilities bit-identical to softmax(predict_batch) as before."""
    image = make_image(37, 53, seed=7)
    before = softmax(predict_batch(loaded.model, image[None], stride=4)[0])
    assert np.array_equal(predict_logits(loaded.model, image, stride=4, softmax=True), before)
    assert np.array_equal(predict_logits(loaded.model, image, stride=4, softmax=True, tta=None), before)
    write_image(tmp_path / "a.png", image)
    rec, = predict_files(loaded, [tmp_path / "a.png"], tmp_path / "out", probabilities=True, tta="none")
    assert np.array_equal(np.load(rec.probabilities), before.astype(np.float16))
    flipped = predict_logits(loaded.model, image, stride=4, softmax=True, tta="flip")
    assert not np.array_equal(flipped, before)


def test_tta_tiled_equals_untiled_without_context():
    """With a 1x1-conv model tiles lose no context, so each scaled / flipped pass, resampled window by window into
    the accumulator, must give exactly the untiled result."""
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(K, 1)
    model = keras.Model(inputs, conv(inputs))
    kernel = np.random.default_rng(0).normal(0, 0.05, (1, 1, 3, K)).astype(np.float32)
    conv.set_weights([kernel, np.zeros(K, np.float32)])
    image = make_image(75, 141, seed=9)
    for tta in ("flip,0.75,1.25", "0.6,1.7"):
        full = predict_logits(model, image, stride=1, softmax=True, tta=tta)
        tiled = predict_logits(model, image, stride=1, softmax=True, tta=tta, tile=20, overlap=4, batch_size=3)
        np.testing.assert_allclose(tiled, full, atol=1e-6)


def test_tta_upscaled_pass_goes_through_tiles(loaded, monkeypatch, tmp_path):
    """An image within --tile whose 1.5x pass is not: that pass runs in tiles too, so no model call is bigger than a
    tile."""
    import segcli.inference.arrays as arrays

    shapes, forward = [], arrays.forward
    monkeypatch.setattr(arrays, "forward", lambda model, batch: shapes.append(batch.shape) or forward(model, batch))
    write_image(tmp_path / "a.png", make_image(60, 60))
    rec, = predict_files(loaded, [tmp_path / "a.png"], tmp_path / "out", tile=64, overlap=16, tta="1.5")
    assert png_ihdr(rec.mask)[:2] == (60, 60)
    assert shapes == [(1, 60, 60, 3), (4, 64, 64, 3)]  # the plain pass whole, the 90x90 pass in four tiles


def test_cli_predict_tta_tiled(cli, loaded, model_file, tmp_path):
    """A tiled image (--tile 64) with flip and two scales: every pass goes through the tiles and still gives the
    untiled TTA result up to the tiling tolerance; probabilities written are the averaged ones."""
    image = make_image(75, 141, seed=8)
    write_image(tmp_path / "big.png", image)
    result = cli("predict", model_file, tmp_path / "big.png", "--out", tmp_path / "out", "--tile", "64",
                 "--overlap", "16", "--tta", "flip,0.75,1.25", "--probabilities")
    assert result.exit_code == 0, result.output
    probs = np.load(tmp_path / "out" / "big_probs.npy").astype(np.float32)
    assert probs.shape == (75, 141, K)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=5e-3)
    untiled = predict_logits(loaded.model, image, stride=4, softmax=True, tta="flip,0.75,1.25")
    assert (probs.argmax(-1) == untiled.argmax(-1)).mean() >= TILE_LABEL_AGREEMENT
    assert np.abs(probs - untiled).max() <= TILE_MAX_PROB_DIFF
    plain = predict_logits(loaded.model, image, stride=4, softmax=True)
    assert np.abs(untiled - plain).max() > 0.05  # the comparison above is not the plain prediction's
    assert (read_label_png(tmp_path / "out" / "big.png") == probs.argmax(-1)).mean() > 0.99


def test_cli_predict_bad_tta(cli, model_file, tmp_path):
    write_image(tmp_path / "x.png", make_image(16, 16))
    for spec, words in (("flop", "'flop' is neither"), ("flip,0", "outside"), ("1", "adds no pass")):
        result = cli("predict", model_file, tmp_path / "x.png", "--out", tmp_path / "o", "--tta", spec)
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert len(result.stderr.strip().splitlines()) == 1 and "--tta" in result.stderr and words in result.stderr
    assert not (tmp_path / "o").exists()


# --- what a successful predict leaves: a quiet stderr, files with the usual mode, no temporaries -------------

def test_cli_predict_success_writes_nothing_to_stderr(cli, model_file, tmp_path):
    write_image(tmp_path / "x.png", make_image(20, 28))
    result = cli("predict", model_file, tmp_path / "x.png", "--out", tmp_path / "preds", "--overlay",
                 "--probabilities")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # the progress bar of a file or pipe draws nothing and leaves no empty line


def test_cli_predict_files_get_the_mode_of_any_new_file(cli, model_file, tmp_path):
    """Masks, overlays, probabilities and the folder's mark: 0666 less the umask, like any file the user makes
    (not mkstemp's 0600)."""
    import os
    import stat

    write_image(tmp_path / "x.png", make_image(20, 28))
    umask = os.umask(0o002)
    try:
        result = cli("predict", model_file, tmp_path / "x.png", "--out", tmp_path / "preds", "--overlay",
                     "--probabilities")
    finally:
        os.umask(umask)
    assert result.exit_code == 0, result.output
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "preds").iterdir()}
    assert modes == {name: 0o664 for name in (".segcli", "x.png", "x_overlay.png", "x_probs.npy")}


def test_cli_predict_removes_only_what_a_killed_predict_left(cli, model_file, tmp_path):
    """A predict killed with SIGKILL leaves its temporaries (hidden, named with TMP_TAG) in --out: the next
    predict there removes them; a file of the user's, a folder, a file below, and a temporary of a predict
    still running (its pid is alive) stay."""
    import os
    import subprocess
    import sys

    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    write_image(tmp_path / "x.png", make_image(20, 28))
    out = tmp_path / "preds"
    (out / "sub").mkdir(parents=True)
    left = [out / f".x_probs.npy{TMP_TAG}{gone}-0a1b2c3d.npy",  # this segcli's name: its writer is gone
            out / f".y_probs{TMP_TAG}k2j4_x9q.npy", out / f".y.png{TMP_TAG}abcd1234.png"]  # an older segcli's
    kept = [out / f".z_probs.npy{TMP_TAG}{os.getppid()}-0a1b2c3d.npy",  # its writer runs
            out / f"notes{TMP_TAG}draft.txt", out / ".mine", out / "sub" / f".w.png{TMP_TAG}abcd1234.png"]
    for path in left + kept:
        path.write_bytes(b"partial")
    (out / f".v{TMP_TAG}dir").mkdir()
    result = cli("predict", model_file, tmp_path / "x.png", "--out", out, "--probabilities")
    assert result.exit_code == 0, result.output
    assert not [p for p in left if p.exists()]
    assert all(p.read_bytes() == b"partial" for p in kept) and (out / f".v{TMP_TAG}dir").is_dir()
    assert (out / "x_probs.npy").is_file()


def test_cli_predict_pattern_in_a_folder_whose_name_has_brackets(cli, model_file, tmp_path):
    """`shots[1]/*.png`: a folder really named `shots[1]` is that folder (not the pattern for `shots1`); the
    part after it is still a pattern."""
    src = tmp_path / "shots[1]"
    for name in ("a", "b"):
        write_image(src / f"{name}.png", make_image(20, 28))
    (tmp_path / "shots1").mkdir()  # what the brackets spell as a pattern: no images there
    result = cli("predict", model_file, str(src / "*.png"), "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["a.png", "b.png"]
    assert [p.name for p in resolve_inputs([str(src / "[a]*.png")])] == ["a.png"]
