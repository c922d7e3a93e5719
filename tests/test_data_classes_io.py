"""Classes files, image/mask reading and writing, mask encodings."""

import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from segcli.data import (ClassMap, camvid_classes, decode_mask, default_classes, detect_encoding, load_classes,
                         read_image, read_label_png, read_mask, write_image, write_mask_png)
from segcli.data.imageio import png_color_type
from segcli.errors import DataError

THREE = ClassMap(("a", "b", "c"), ((255, 0, 0), (0, 255, 0), (0, 0, 255)), ignore_index=255)


def labels_16x24(values=(0, 1, 2, 255)) -> np.ndarray:
    return np.resize(np.array(values, np.uint8), (16, 24))


# --- classes ----------------------------------------------------------------------------------

def test_classmap_basics_and_roundtrip(tmp_path):
    assert THREE.num_classes == 3
    pal = THREE.palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[1].tolist() == [0, 255, 0] and pal[255].tolist() == [0, 0, 0] and pal[3].tolist() == [0, 0, 0]
    assert ClassMap.from_dict(THREE.to_dict()) == THREE
    THREE.save(tmp_path / "c.json")
    assert load_classes(tmp_path / "c.json") == THREE


def test_ignore_index_must_not_be_a_class():
    with pytest.raises(DataError, match="ignore_index 1"):
        ClassMap(("a", "b"), ((1, 1, 1), (2, 2, 2)), ignore_index=1)


@pytest.mark.parametrize("text, match", [
    (None, "no such classes file"),
    ("{not json", "not a valid JSON"),
    ('{"names": []}', '"classes" list'),
    ('{"classes": [{"name": "a", "color": [1, 2]}]}', "colour"),
])
def test_load_classes_errors_name_the_file(tmp_path, text, match):
    path = tmp_path / "classes.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(DataError, match=match) as err:
        load_classes(path)
    assert err.value.path == path


def test_void_as_class():
    camvid = camvid_classes()
    assert camvid.names[0] == "Sky" and camvid.colors[4] == (60, 40, 222) and camvid.ignore_index == 11
    with_void = camvid.with_void_as_class()
    assert with_void.num_classes == 12 and with_void.names[11] == "Void" and with_void.ignore_index == 255
    assert THREE.with_void_as_class().ignore_index == 255 and THREE.with_void_as_class().names[3] == "void"


def test_default_classes_palette_is_distinct():
    classes = default_classes(40)
    assert len(set(classes.colors)) == 40 and (0, 0, 0) not in classes.colors
    assert default_classes(2, ["bg", "fg"]).names == ("bg", "fg")


def test_shipped_camvid_classes_files_match_the_resource():
    root = Path(__file__).resolve().parents[1]
    for path in (root / "segcli" / "resources" / "recipes" / "camvid-classes.json", root / "sample_data" / "classes.json"):
        assert load_classes(path) == camvid_classes(), path


def _classes_file(tmp_path, **changes) -> Path:
    """THREE's classes file with `changes` made to its dict ("classes" replaced, other keys added or replaced)."""
    data = {**THREE.to_dict(), **changes}
    path = tmp_path / "classes.json"
    path.write_text(json.dumps(data))
    return path


BAD_CLASSES_FILES = [  # (changes, words of the one-line message)
    ({"classes": [{"name": "a", "color": [255, 0, 0]}, {"name": "a", "color": [0, 255, 0]}]},
     "classes[1]: name 'a' is also classes[0]'s; class names must be unique"),
    ({"classes": [{"name": "a", "color": [255, 0, 0]}, {"name": "b", "color": [255, 0, 0]}]},
     "classes[1] ('b'): colour [255, 0, 0] is also classes[0]'s ('a'); class colours must be unique"),
    ({"ignore_color": [0, 255, 0]}, "ignore_color [0, 255, 0] is also classes[1]'s ('b')"),
    ({"ignore_name": "c"}, "ignore_name 'c' is also classes[2]'s name"),
    ({"colours": {}}, "unknown key 'colours'; valid keys: classes, ignore_index, ignore_name, ignore_color"),
    ({"classes": [{"name": "a", "colour": [1, 2, 3]}, {"name": "b"}]},
     "classes[0]: unknown key 'colour'; valid keys: name, color"),
    ({"classes": [{"name": 7, "color": [1, 2, 3]}]}, "classes[0]: name must be a non-empty string, got 7"),
    ({"classes": [{"name": "a", "color": [1, 2.5, 3]}]}, "class 'a': colour must be [r, g, b], three integers 0..255"),
    ({"classes": [{"name": "a", "color": [1, 2, 256]}]}, "three integers 0..255, got [1, 2, 256]"),
    ({"classes": [{"name": "a", "color": [True, 2, 3]}]}, "three integers 0..255"),
    ({"classes": [{"name": "a", "color": "red"}]}, "three integers 0..255, got 'red'"),
    ({"ignore_color": [0, 0]}, "ignore_color: colour must be [r, g, b]"),
    ({"ignore_index": "11"}, "ignore_index must be an integer from 3 to 255 (0..2 are the classes), got '11'"),
    ({"ignore_index": 1e9}, "ignore_index must be an integer from 3 to 255 (0..2 are the classes), got 1000000000.0"),
    ({"ignore_index": True}, "got True"),
    ({"ignore_index": 2}, "got 2"),
    ({"ignore_index": 256}, "got 256"),
    ({"ignore_index": -1}, "got -1"),
    ({"ignore_index": 11.5}, "got 11.5"),
]


@pytest.mark.parametrize("changes, message", BAD_CLASSES_FILES)
def test_classes_file_mistakes_are_refused_naming_the_file(tmp_path, changes, message):
    path = _classes_file(tmp_path, **changes)
    with pytest.raises(DataError) as err:
        load_classes(path)
    assert message in err.value.problem and err.value.path == path
    assert "\n" not in str(err.value)


def test_valid_classes_files_still_load(tmp_path):
    assert load_classes(_classes_file(tmp_path, ignore_index=11.0)).ignore_index == 11  # 11.0 counts as 11
    assert load_classes(_classes_file(tmp_path, ignore_index=3)).ignore_index == 3  # K itself (CamVid's 11)
    bare = _classes_file(tmp_path, classes=["x", "y"])  # bare names take distinct default colours
    assert load_classes(bare).colors == default_classes(2).colors
    many = default_classes(300)  # more than 255 classes: ignore_index K
    many.save(tmp_path / "many.json")
    assert load_classes(tmp_path / "many.json") == many


def test_a_models_own_record_is_read_as_saved():
    """A model's metadata (a ClassMap's to_dict, e.g. classes inferred from a palette with repeated colours) is not
    a classes file: it loads as it was saved."""
    same = ClassMap(("a", "b"), ((1, 1, 1), (1, 1, 1)), ignore_index=255)
    assert ClassMap.from_dict(same.to_dict()) == same


def test_train_refuses_duplicate_class_names_before_a_run_folder(cli, tmp_path):
    """Two classes named alike made one IoU column vanish from history.csv and metrics.json: now refused."""
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for name in ("a", "b"):
        write_image(data / "images" / f"{name}.png", np.full((16, 24, 3), 90, np.uint8))
        write_mask_png(data / "masks" / f"{name}.png", labels_16x24(), THREE.palette())
    doc = THREE.to_dict()
    doc["classes"][2]["name"] = "a"
    (data / "classes.json").write_text(json.dumps(doc))
    out = tmp_path / "run"
    result = cli("train", "unet", data, "--out", out, "--epochs", "1", "--size", "16x16", "--batch-size", "1")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(data / "classes.json") in lines[0], result.stderr
    assert "name 'a' is also classes[0]'s" in lines[0]
    assert not out.exists()


# --- images and PNG masks ---------------------------------------------------------------------

def test_image_roundtrip_and_errors(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    write_image(tmp_path / "a.png", rgb)
    assert np.array_equal(read_image(tmp_path / "a.png"), rgb)
    with pytest.raises(DataError, match="no such file"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="corrupt, truncated"):
        read_image(tmp_path / "bad.png")


def test_palette_png_roundtrip_with_duplicate_palette_colours(tmp_path):
    labels = labels_16x24()
    write_mask_png(tmp_path / "m.png", labels, THREE.palette())  # 252 black entries, 255 black too
    assert png_color_type(tmp_path / "m.png") == 3
    got = read_label_png(tmp_path / "m.png")
    assert got.dtype == np.uint8 and np.array_equal(got, labels)


def test_palette_png_with_paeth_filter_falls_back_to_colours(tmp_path):
    labels = np.array([[0, 1, 2, 1], [2, 2, 0, 1]], np.uint8)
    palette = np.array([[10, 10, 10], [200, 0, 0], [0, 200, 0]], np.uint8)
    first = np.diff(labels[0], prepend=0).astype(np.uint8)  # Paeth on the first row predicts from the left
    raw = bytes([4]) + first.tobytes() + bytes([0]) + labels[1].tobytes()

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    (tmp_path / "p.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 2, 8, 3, 0, 0, 0))
                                     + chunk(b"PLTE", palette.tobytes()) + chunk(b"IDAT", zlib.compress(raw))
                                     + chunk(b"IEND", b""))
    assert np.array_equal(read_label_png(tmp_path / "p.png"), labels)


def test_palette_png_written_by_pillow(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    labels = labels_16x24((0, 1, 2, 3))
    for name, kwargs in [("plain.png", {}), ("optimized.png", {"optimize": True})]:
        img = Image.fromarray(labels, mode="P")
        img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 0])  # 0 and 3 share black
        img.save(tmp_path / name, **kwargs)
        assert np.array_equal(read_label_png(tmp_path / name), labels), name


# --- encodings --------------------------------------------------------------------------------

def test_index_8_and_16_bit(tmp_path):
    labels = labels_16x24()
    cv2.imwrite(str(tmp_path / "m8.png"), labels)
    cv2.imwrite(str(tmp_path / "m16.png"), labels.astype(np.uint16))
    assert read_label_png(tmp_path / "m16.png").dtype == np.uint16
    for name in ("m8.png", "m16.png"):
        assert detect_encoding([tmp_path / name]) == "index"
        got = read_mask(tmp_path / name, "index", THREE)
        assert got.dtype == np.uint8 and np.array_equal(got, labels)


def test_palette_encoding(tmp_path):
    write_mask_png(tmp_path / "m.png", labels_16x24(), THREE.palette())
    assert detect_encoding([tmp_path / "m.png"]) == "palette"
    assert np.array_equal(read_mask(tmp_path / "m.png", "palette", THREE), labels_16x24())


def test_rgb_encoding_through_classes(tmp_path):
    labels = labels_16x24()
    write_image(tmp_path / "m.png", THREE.palette()[labels])
    assert detect_encoding([tmp_path / "m.png"], THREE) == "rgb"
    assert np.array_equal(read_mask(tmp_path / "m.png", "rgb", THREE), labels)


def test_unknown_rgb_colour_is_named(tmp_path):
    rgb = THREE.palette()[labels_16x24()]
    rgb[0, 0] = (1, 2, 3)
    with pytest.raises(DataError, match=r"\(1,2,3\)"):
        decode_mask(rgb, "rgb", THREE, path=tmp_path / "m.png")


def test_binary_masks_read_as_0_1(tmp_path):
    mask = np.where(labels_16x24((0, 1)) == 1, 255, 0).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    assert detect_encoding([tmp_path / "m.png"]) == "binary"
    assert detect_encoding([tmp_path / "m.png"], THREE) == "index"  # 3 classes given: 255 is void
    got = read_mask(tmp_path / "m.png", "binary", default_classes(2))
    assert set(np.unique(got)) == {0, 1}


def test_labels_outside_the_classes(tmp_path):
    cv2.imwrite(str(tmp_path / "m.png"), labels_16x24((0, 1, 7, 9, 255)))
    with pytest.raises(DataError, match="label values 7, 9 outside") as err:
        read_mask(tmp_path / "m.png", "index", THREE)
    assert err.value.path.name == "m.png"


def test_classes_file_json_shape(tmp_path):
    THREE.save(tmp_path / "c.json")
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["classes"][0] == {"name": "a", "color": [255, 0, 0]} and data["ignore_index"] == 255


def test_frames_names_multi_frame_files_quietly(tmp_path, capfd):
    """frames(): (kind, N) for an animated GIF or a multi-page TIFF, None for one frame, other formats and damaged
    files, without OpenCV's own error line on stderr."""
    from segcli.data.imageio import frames

    frame = np.full((8, 8, 3), 90, np.uint8)
    assert cv2.imwritemulti(str(tmp_path / "a.gif"), [frame, 255 - frame, frame])
    assert cv2.imwritemulti(str(tmp_path / "p.tiff"), [frame, 255 - frame])
    assert cv2.imwrite(str(tmp_path / "one.gif"), frame)
    write_image(tmp_path / "one.png", frame)
    (tmp_path / "bad.gif").write_bytes(b"GIF89a and then nothing")
    assert frames(tmp_path / "a.gif") == ("animated GIF", 3)
    assert frames(tmp_path / "p.tiff") == ("multi-page TIFF", 2)
    assert [frames(tmp_path / n) for n in ("one.gif", "one.png", "bad.gif", "missing.gif")] == [None] * 4
    assert np.array_equal(read_image(tmp_path / "p.tiff"), frame)  # frame 1 is what the reader gives
    assert capfd.readouterr().err == ""
