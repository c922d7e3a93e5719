"""Inputs read as they are, or refused by name: EXIF orientation, lossy and noisy masks, 16-bit and float
images, one-class data and classes missing from train."""

import struct
import zlib

import cv2
import numpy as np
import pytest

from segcli.data import ClassMap, check_dataset, open_dataset, read_image
from segcli.data.imageio import exif_orientation, read_image_noted
from segcli.errors import DataError

THREE = ClassMap(("a", "b", "c"), ((255, 0, 0), (0, 255, 0), (0, 0, 255)), ignore_index=255)


def _tiff_block(orientation: int, order: str) -> bytes:
    """A TIFF structure with one IFD holding only the Orientation tag (what an EXIF block is)."""
    e = "<" if order == "II" else ">"
    head = order.encode() + struct.pack(e + "HI", 42, 8)
    return head + struct.pack(e + "H", 1) + struct.pack(e + "HHIHH", 0x0112, 3, 1, orientation, 0) + b"\0" * 4


def jpeg_with_orientation(path, bgr, orientation=6, order="MM"):
    """cv2 cannot write EXIF: insert an APP1 "Exif" segment right after the JPEG's SOI marker."""
    data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes()
    payload = b"Exif\0\0" + _tiff_block(orientation, order)
    path.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:])


def png_with_orientation(path, image, orientation=8):
    """A PNG with an eXIf chunk before its image data."""
    data = cv2.imencode(".png", image)[1].tobytes()
    tiff = _tiff_block(orientation, "II")
    chunk = struct.pack(">I", len(tiff)) + b"eXIf" + tiff + struct.pack(">I", zlib.crc32(b"eXIf" + tiff))
    at = data.index(b"IDAT") - 4
    path.write_bytes(data[:at] + chunk + data[at:])


def folders(root):
    for name in ("images", "masks"):
        (root / name).mkdir(parents=True, exist_ok=True)
    return root / "images", root / "masks"


def two_class_mask(h, w):
    labels = np.zeros((h, w), np.uint8)
    labels[:, w // 2:] = 1
    return labels


# --- EXIF orientation: ignored for images and masks alike, and said so ----------------------------------

def test_exif_orientation_ignored_and_named_square(tmp_path, cli):
    images, masks = folders(tmp_path)
    bgr = np.zeros((32, 32, 3), np.uint8)
    bgr[:8, :16] = 255  # a bright block top-left: rotating the image would move it
    for name in ("a", "b"):
        jpeg_with_orientation(images / f"{name}.jpg", bgr, orientation=6)
        cv2.imwrite(str(masks / f"{name}.png"), two_class_mask(32, 32))
    assert exif_orientation(images / "a.jpg") == 6 and exif_orientation(masks / "a.png") == 1
    rgb = read_image(images / "a.jpg")
    assert rgb[:8, :16].mean() > 200 and rgb[-8:, :16].mean() < 50 and rgb[:8, -16:].mean() < 50  # as stored

    report = check_dataset(open_dataset(tmp_path, val_fraction=0))
    assert report.ok, report.problems
    notice = next(n for n in report.notices if "EXIF orientation" in n)
    assert "ignored" in notice and "a.jpg (rotated 90° clockwise)" in notice and "b.jpg" in notice
    result = cli("data", "check", tmp_path, "--val-fraction", "0")
    assert result.exit_code == 0 and "EXIF orientation" in result.output


def test_exif_orientation_non_square(tmp_path):
    """Stored 16x24 with 'rotate 90°': a mask of the stored size fits; one drawn on the rotated view is
    refused with a message naming the EXIF orientation, not a bare size error."""
    images, masks = folders(tmp_path)
    for name in ("fits", "rotated"):
        jpeg_with_orientation(images / f"{name}.jpg", np.full((16, 24, 3), 90, np.uint8), orientation=6, order="II")
    cv2.imwrite(str(masks / "fits.png"), two_class_mask(16, 24))
    cv2.imwrite(str(masks / "rotated.png"), two_class_mask(24, 16))
    assert read_image(images / "fits.jpg").shape == (16, 24, 3)
    report = check_dataset(open_dataset(tmp_path, val_fraction=0))
    assert [p.path.name for p in report.problems] == ["rotated.png"]
    problem = report.problems[0].problem
    assert "mask is 24x16 but its image rotated.jpg is 16x24" in problem
    assert "EXIF orientation (rotated 90° clockwise) is ignored" in problem and "rotated view" in problem


def test_exif_orientation_in_png(tmp_path):
    png_with_orientation(tmp_path / "m.png", two_class_mask(8, 12), orientation=8)
    assert exif_orientation(tmp_path / "m.png") == 8
    assert read_image(tmp_path / "m.png").shape == (8, 12, 3)  # not rotated on reading


def test_predict_overlay_evaluate_and_training_share_the_reader():
    """Prediction, overlays, evaluation and the training pipeline see the pixels data check saw."""
    import segcli.data.imageio as imageio
    import segcli.data.loader as loader
    import segcli.data.options as options
    import segcli.data.tfdata as tfdata
    import segcli.evaluation as evaluation
    import segcli.inference.sources as sources
    import segcli.overlay as overlay

    for module in (loader, tfdata, options, evaluation, sources, overlay):
        assert module.read_image is imageio.read_image, module.__name__


# --- lossy and noisy masks ---------------------------------------------------------------------------

@pytest.mark.parametrize("quality", [75, 95])  # 95: so few stray values that only the JPEG gives it away
def test_jpeg_masks_refused_by_check_and_train(tmp_path, cli, quality):
    root = tmp_path / "data"  # the run folder goes beside the data, never inside it
    root.mkdir()
    images, masks = folders(root)
    binary = np.zeros((64, 64), np.uint8)
    binary[8:40, 5:50] = 255
    for i in range(3):
        cv2.imwrite(str(images / f"p{i}.png"), np.full((64, 64, 3), 80, np.uint8))
        cv2.imwrite(str(masks / f"p{i}.jpg"), binary, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert len(np.unique(cv2.imread(str(masks / "p0.jpg"), cv2.IMREAD_UNCHANGED))) > 2
    report = check_dataset(open_dataset(root, val_fraction=0))
    assert report.encoding == "binary" and report.class_names == ["background", "foreground"]  # not 255 classes
    assert any("0/255 binary masks with in-between values" in n for n in report.notices)
    assert sorted(p.path.name for p in report.problems) == ["p0.jpg", "p1.jpg", "p2.jpg"]  # one problem per file
    assert all("JPEG" in p.problem and "lossy" in p.problem and "save masks as PNG" in p.problem
               for p in report.problems)
    result = cli("train", "unet", root, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "lossy" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_noisy_binary_png_masks_named(tmp_path):
    """A 0/255 mask resized with interpolation: many values, named as a noisy binary mask, each file listed."""
    images, masks = folders(tmp_path)
    small = np.zeros((8, 8), np.uint8)
    small[2:6, 3:7] = 255
    noisy = cv2.resize(small, (64, 64), interpolation=cv2.INTER_LINEAR)
    assert len(np.unique(noisy)) > 10
    for i in range(2):
        cv2.imwrite(str(images / f"p{i}.png"), np.full((64, 64, 3), 80, np.uint8))
        cv2.imwrite(str(masks / f"p{i}.png"), noisy)
    report = check_dataset(open_dataset(tmp_path, val_fraction=0))
    assert report.encoding == "binary" and len(report.class_names) == 2
    notice = next(n for n in report.notices if "0/255 binary masks" in n)
    assert "not class indices" in notice and "nearest neighbour" in notice
    assert [p.path.name for p in report.problems] == ["p0.png", "p1.png"]
    assert "binary mask has values other than 0/255" in report.problems[0].problem


def test_index_masks_with_void_not_taken_for_noise(tmp_path):
    """Index masks that are mostly background 0 and void 255 with a few small classes stay index masks."""
    images, masks = folders(tmp_path)
    labels = np.zeros((32, 32), np.uint8)
    labels[:2] = 255
    labels[10, 10:12], labels[20, 3] = 1, 2
    for i in range(2):
        cv2.imwrite(str(images / f"p{i}.png"), np.full((32, 32, 3), 80, np.uint8))
        cv2.imwrite(str(masks / f"p{i}.png"), labels)
    report = check_dataset(open_dataset(tmp_path, val_fraction=0))
    assert report.ok and report.encoding == "index" and len(report.class_names) == 3
    assert not any("0/255" in n for n in report.notices)


# --- 16-bit and float images ----------------------------------------------------------------------------

def test_twelve_bit_data_in_16_bit_png(tmp_path):
    images, masks = folders(tmp_path)
    grey = np.zeros((16, 24), np.uint16)
    grey[:, :8], grey[:, 8:16], grey[:, 16:] = 0, 2048, 4095
    cv2.imwrite(str(images / "p0.png"), np.dstack([grey] * 3))
    cv2.imwrite(str(images / "p1.png"), grey)  # single-channel 16-bit too
    rgb, how = read_image_noted(images / "p0.png")
    assert rgb.dtype == np.uint8 and rgb[0, 0, 0] == 0 and rgb[0, 12, 0] == 128 and rgb[0, 20, 0] == 255
    assert "12-bit" in how
    assert (read_image(images / "p1.png") == rgb).all()
    index16 = two_class_mask(16, 24).astype(np.uint16)  # 16-bit index masks stay class indices
    for i in range(2):
        cv2.imwrite(str(masks / f"p{i}.png"), index16)
    report = check_dataset(open_dataset(tmp_path, val_fraction=0))
    assert report.ok and report.encoding == "index" and len(report.class_names) == 2
    assert report.pixel_share == pytest.approx([0.5, 0.5])
    assert any("16-bit, values within 0..4095: read as 12-bit x2" in n for n in report.notices)


def test_full_range_16_bit_and_mixed_ranges_said(tmp_path):
    images, masks = folders(tmp_path)
    cv2.imwrite(str(images / "full.png"), np.full((8, 8, 3), 65535, np.uint16))
    cv2.imwrite(str(images / "ten.png"), np.full((8, 8, 3), 1023, np.uint16))
    assert read_image(images / "full.png").min() == 255 and read_image(images / "ten.png").min() == 255
    for name in ("full", "ten"):
        cv2.imwrite(str(masks / f"{name}.png"), two_class_mask(8, 8))
    report = check_dataset(open_dataset(tmp_path, val_fraction=0))
    assert any("read as 16-bit" in n and "read as 10-bit" in n for n in report.notices)
    assert any("different value ranges" in n for n in report.notices)


def test_float_tiff_images(tmp_path):
    images, masks = folders(tmp_path)
    ramp = np.linspace(0.0, 1.0, 16 * 24, dtype=np.float32).reshape(16, 24)
    assert cv2.imwrite(str(images / "unit.tif"), np.dstack([ramp] * 3))
    assert cv2.imwrite(str(images / "grey.tif"), ramp)
    assert cv2.imwrite(str(images / "wide.tif"), np.dstack([ramp * 1000 - 5] * 3))
    rgb, how = read_image_noted(images / "unit.tif")
    assert rgb.dtype == np.uint8 and rgb.min() == 0 and rgb.max() == 255 and "float" in how
    assert (read_image(images / "grey.tif") == rgb).all()
    with pytest.raises(DataError, match=r"float image with values -5\.\.995: only floats in 0\.\.1"):
        read_image(images / "wide.tif")
    for name in ("unit", "grey", "wide"):
        cv2.imwrite(str(masks / f"{name}.png"), two_class_mask(16, 24))
    report = check_dataset(open_dataset(tmp_path, val_fraction=0))
    assert [(p.path.name, "corrupt" in p.problem) for p in report.problems] == [("wide.tif", False)]
    assert any("float, values 0..1 scaled to 0..255 x2" in n for n in report.notices)


# --- classes: one-class data, classes missing from train -------------------------------------------------

def test_one_class_data_refused(tmp_path, cli):
    root = tmp_path / "data"  # the run folder goes beside the data, never inside it
    root.mkdir()
    images, masks = folders(root)
    for i in range(4):
        cv2.imwrite(str(images / f"p{i}.png"), np.full((16, 16, 3), 60 * i, np.uint8))
        cv2.imwrite(str(masks / f"p{i}.png"), np.zeros((16, 16), np.uint8))
    report = check_dataset(open_dataset(root))
    assert not report.ok and [p.path for p in report.problems] == [root]
    assert "only one class (class_0)" in report.problems[0].problem
    result = cli("data", "check", root)
    assert result.exit_code == 1 and "only one class" in result.output
    result = cli("train", "unet", root, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "only one class" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_val_classes_missing_from_train(tmp_path):
    for split, top in (("train", 2), ("val", 3)):
        (tmp_path / split).mkdir()
        (tmp_path / f"{split}annot").mkdir()
        labels = np.resize(np.arange(top, dtype=np.uint8), (16, 24))
        cv2.imwrite(str(tmp_path / split / "p.png"), np.full((16, 24, 3), 90, np.uint8))
        cv2.imwrite(str(tmp_path / f"{split}annot" / "p.png"), labels)
    THREE.save(tmp_path / "classes.json")
    report = check_dataset(open_dataset(tmp_path))
    assert report.ok
    assert "val has classes that train lacks: c" in " | ".join(report.notices)
    assert report.to_dict()["notices"] == report.notices
