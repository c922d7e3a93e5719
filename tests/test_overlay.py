"""segcli.overlay and `segcli overlay`: blending, legends, panels, classes lookup, size mismatch."""

import json

import cv2
import numpy as np
import pytest

from segcli.data import ClassMap, default_classes, read_image, write_image, write_mask_png
from segcli.errors import SegcliError
from segcli.overlay import blend, colorize, legend, mask_labels, overlay_files, overlay_image, present_labels

CLASSES = ClassMap(("sky", "road", "car"), ((0, 0, 255), (255, 0, 0), (0, 255, 0)), ignore_index=255)


def sample(h=30, w=40):
    image = np.full((h, w, 3), 100, np.uint8)
    labels = np.zeros((h, w), np.uint8)
    labels[:, w // 2:] = 1
    labels[: h // 3] = 255  # void band on top
    return image, labels


def test_blend_leaves_void_untouched():
    image, labels = sample()
    out = blend(image, labels, CLASSES, alpha=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (out[labels == 255] == 100).all()
    # 0.5 * grey 100 + 0.5 * the class colour, rounded
    assert np.abs(out[-1, 0].astype(int) - (50, 50, 177.5)).max() <= 0.5  # sky (blue)
    assert np.abs(out[-1, -1].astype(int) - (177.5, 50, 50)).max() <= 0.5  # road (red)
    assert (blend(image, labels, CLASSES, alpha=0.0) == image).all()
    assert (colorize(labels, CLASSES)[labels == 1] == (255, 0, 0)).all()


def test_banded_blend_matches_whole(monkeypatch):
    import segcli.overlay as overlay

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (45, 20, 3), dtype=np.uint8)
    labels = rng.choice(np.array([0, 1, 2, 255], np.uint8), (45, 20))
    whole = overlay_image(image, labels, CLASSES, 0.3, panel=True)
    monkeypatch.setattr(overlay, "_CHUNK_ROWS", 7)  # bands of 7 rows: the last one is partial
    assert (overlay_image(image, labels, CLASSES, 0.3, panel=True) == whole).all()
    assert present_labels(labels) == [0, 1, 2, 255]
    expected = np.rint(image * 0.7 + colorize(labels, CLASSES) * 0.3)
    expected[labels == 255] = image[labels == 255]
    assert np.abs(whole[:45, 40:] - expected).max() <= 1


def test_present_labels_and_legend():
    _, labels = sample()
    assert present_labels(labels) == [0, 1, 255]
    strip = legend(CLASSES, [0, 1, 255], width=300)
    assert strip.ndim == 3 and strip.shape[1] == 300 and strip.shape[0] > 10
    colours = {tuple(c) for c in strip.reshape(-1, 3).tolist()}
    assert (0, 0, 255) in colours and (255, 0, 0) in colours and (0, 255, 0) not in colours  # only classes present
    narrow = legend(CLASSES, [0, 1, 2, 255], width=120)
    assert narrow.shape[1] == 120 and narrow.shape[0] > strip.shape[0]  # wrapped into more rows


def test_overlay_image_and_panel():
    image, labels = sample()
    single = overlay_image(image, labels, CLASSES)
    assert single.shape[1] == 40 and single.shape[0] > 30
    panel = overlay_image(image, labels, CLASSES, panel=True)
    assert panel.shape[1] == 3 * 40
    assert (panel[:30, :40] == image).all() and (panel[:30, 40:80] == colorize(labels, CLASSES)).all()


def test_mask_labels_finds_classes(tmp_path):
    _, labels = sample()
    root = tmp_path / "ds"
    write_mask_png(root / "trainannot" / "a.png", labels, CLASSES.palette())
    got, classes = mask_labels(root / "trainannot" / "a.png")
    assert (got == labels).all() and classes.num_classes == 2  # inferred from the values (0, 1, void 255)
    CLASSES.save(root / "classes.json")  # the dataset root's classes file wins over inference
    got, classes = mask_labels(root / "trainannot" / "a.png")
    assert classes.names == CLASSES.names and (got == labels).all()
    rgb = colorize(np.where(labels == 255, 2, labels), CLASSES)
    write_image(tmp_path / "colour.png", rgb)
    got, classes = mask_labels(tmp_path / "colour.png")  # colours present become the classes
    assert classes.num_classes == 3 and len(present_labels(got)) == 3


def test_overlay_files_mismatch_names_mask(tmp_path):
    image, labels = sample()
    write_image(tmp_path / "img.png", image)
    write_mask_png(tmp_path / "mask.png", labels[:-1], CLASSES.palette())
    with pytest.raises(SegcliError, match="mask.png"):
        overlay_files(tmp_path / "img.png", tmp_path / "mask.png", tmp_path / "o.png")
    assert not (tmp_path / "o.png").exists()


def test_cli_overlay_panel(cli, tmp_path):
    image, labels = sample(24, 36)
    write_image(tmp_path / "img.png", image)
    cv2.imwrite(str(tmp_path / "mask.png"), labels)  # an index (greyscale) mask
    (tmp_path / "cls.json").write_text(json.dumps(CLASSES.to_dict()))
    out = tmp_path / "panel.png"
    result = cli("overlay", tmp_path / "img.png", tmp_path / "mask.png", "--out", out, "--panel",
                 "--classes", tmp_path / "cls.json", "--alpha", "0.7")
    assert result.exit_code == 0, result.output
    written = read_image(out)
    assert written.shape[1] == 3 * 36 and written.shape[0] > 24

    write_image(tmp_path / "small.png", image[:10])
    result = cli("overlay", tmp_path / "small.png", tmp_path / "mask.png", "--out", tmp_path / "x.png")
    assert result.exit_code == 2 and "mask.png" in result.stderr and "Traceback" not in result.output

    result = cli("overlay", tmp_path / "img.png", tmp_path / "nope.png")
    assert result.exit_code == 2 and "nope.png" in result.stderr


def test_default_classes_legend_for_many():
    classes = default_classes(30)
    strip = legend(classes, range(30), width=400)
    assert strip.shape[1] == 400
