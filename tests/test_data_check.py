"""`data check`: every problem named by file, through the library and the CLI; sample data; CamVid."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from segcli.data import ClassMap, check_dataset, open_dataset, write_image

ROOT = Path(__file__).resolve().parents[1]
THREE = ClassMap(("a", "b", "c"), ((255, 0, 0), (0, 255, 0), (0, 0, 255)), ignore_index=255)


def write_pair(root, name, labels=None, image_size=(16, 24)):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "images" / f"{name}.png"), np.full((*image_size, 3), 90, np.uint8))
    if labels is not None:
        cv2.imwrite(str(root / "masks" / f"{name}.png"), labels)


def broken_dataset(root):
    """One clean pair plus one of each problem `data check` must find."""
    ok = np.resize(np.array([0, 1, 2, 255], np.uint8), (16, 24))
    for name in ("good", "corrupt", "truncated"):
        write_pair(root, name, ok)
    (root / "images" / "corrupt.png").write_bytes(b"definitely not a png")
    data = (root / "masks" / "truncated.png").read_bytes()
    (root / "masks" / "truncated.png").write_bytes(data[: len(data) // 2])
    write_pair(root, "lonely")  # image without mask
    cv2.imwrite(str(root / "masks" / "orphan.png"), ok)  # mask without image
    write_pair(root, "mismatch", np.zeros((8, 24), np.uint8))
    write_pair(root, "outofrange", np.full((16, 24), 7, np.uint8))
    THREE.save(root / "classes.json")
    return root


EXPECTED = {
    "corrupt.png": "corrupt, truncated",
    "truncated.png": "corrupt, truncated",
    "lonely.png": "image without mask",
    "orphan.png": "mask without image",
    "mismatch.png": "mask is 8x24 but its image mismatch.png is 16x24",
    "outofrange.png": "label values 7 outside the classes",
}


def test_check_reports_every_problem_by_file(tmp_path):
    report = check_dataset(open_dataset(broken_dataset(tmp_path), val_fraction=0))
    assert not report.ok
    found = {p.path.name: p.problem for p in report.problems}
    for name, text in EXPECTED.items():
        assert text in found.get(name, ""), (name, found)
    assert len(report.problems) == len(EXPECTED)
    assert report.counts == {"train": 5} and report.sizes == {"16x24": 4}
    assert report.to_dict()["problems"][0].keys() == {"path", "problem"}


def test_check_unknown_rgb_colour(tmp_path):
    labels = np.resize(np.array([0, 1, 2, 255], np.uint8), (16, 24))
    for name in ("a", "b"):
        write_pair(tmp_path, name)
        write_image(tmp_path / "masks" / f"{name}.png", THREE.palette()[labels])
    rgb = THREE.palette()[labels]
    rgb[3, 3] = (9, 9, 9)
    write_image(tmp_path / "masks" / "b.png", rgb)
    report = check_dataset(open_dataset(tmp_path, classes=THREE, val_fraction=0))
    assert report.classes_source == "given" and [p.path.name for p in report.problems] == ["b.png"]
    assert "RGB colours not in the classes file: (9,9,9)" in report.problems[0].problem


def test_clean_report_has_shares(tmp_path):
    labels = np.zeros((16, 24), np.uint8)
    labels[:4] = 255
    labels[4:, :12] = 1
    for name in ("a", "b"):
        write_pair(tmp_path, name, labels)
    report = check_dataset(open_dataset(tmp_path, classes=THREE))
    assert report.ok and report.counts == {"train": 1, "val": 1}
    assert report.pixel_share == pytest.approx([0.375, 0.375, 0.0]) and report.void_share == pytest.approx(0.25)


def test_cli_check_exit_codes(tmp_path, cli):
    result = cli("data", "check", broken_dataset(tmp_path / "ds"), "--val-fraction", "0")
    assert result.exit_code == 1, result.output
    for name in EXPECTED:
        assert name in result.output
    result = cli("data", "check", tmp_path / "ds", "--json")
    assert result.exit_code == 1 and len(json.loads(result.stdout)["problems"]) == len(EXPECTED)
    result = cli("data", "check", tmp_path / "nowhere")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0 and "no such file or directory" in result.output
    result = cli("data", "check", tmp_path / "ds", "--classes", tmp_path / "nope.json")
    assert result.exit_code == 2 and "nope.json: no such classes file" in result.output


def test_sample_data_is_clean(sample_data, cli):
    result = cli("data", "check", sample_data)
    assert result.exit_code == 0, result.output
    assert "split-folders" in result.output and "no problems found" in result.output
    report = check_dataset(open_dataset(sample_data))
    assert report.counts == {"train": 30, "val": 10} and report.sizes == {"180x240": 40}


@pytest.mark.slow
@pytest.mark.camvid
def test_camvid_counts_and_clean(camvid_dir, cli):
    result = cli("data", "check", camvid_dir, "--classes", ROOT / "segcli" / "resources" / "recipes" / "camvid-classes.json", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["counts"] == {"train": 367, "val": 101} and report["problems"] == []
    assert report["sizes"] == {"360x480": 468} and report["classes"][0]["name"] == "Sky"


def test_check_names_the_mask_of_another_encoding(tmp_path, cli):
    """Index masks with one colour mask among them: the one line names that file (and one of the others), not
    the first split's folder."""
    root = tmp_path / "ds"
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            write_image(root / split / f"{split}{i}.png", np.full((16, 24, 3), 90, np.uint8))
            (root / f"{split}annot").mkdir(exist_ok=True)
            labels = np.resize(np.array([0, 1, 2], np.uint8), (16, 24))
            if (split, i) == ("val", 1):
                labels = np.stack([labels * 100] * 2 + [labels], axis=-1)  # a colour mask
            cv2.imwrite(str(root / f"{split}annot" / f"{split}{i}.png"), labels)
    result = cli("data", "check", root)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {root / 'valannot' / 'val1.png'}: "), result.stderr
    assert "masks mix encodings" in lines[0] and "trainannot/train0.png" in lines[0]


def test_check_finds_gifs_and_names_the_frame_of_multi_frame_files(tmp_path, cli):
    """An animated GIF and a multi-page TIFF image are found like predict finds them (IMAGE_EXTS), and each gets a
    notice naming the file and the frame used; a single-frame GIF gets none."""
    labels = np.resize(np.array([0, 1, 2], np.uint8), (16, 24))
    frame = np.full((16, 24, 3), 90, np.uint8)
    for name in ("anim", "pages", "still"):
        write_pair(tmp_path, name, labels)
        (tmp_path / "images" / f"{name}.png").unlink()
    assert cv2.imwritemulti(str(tmp_path / "images" / "anim.gif"), [frame, 255 - frame, frame])
    assert cv2.imwritemulti(str(tmp_path / "images" / "pages.tif"), [frame, 255 - frame])
    assert cv2.imwrite(str(tmp_path / "images" / "still.gif"), frame)
    report = check_dataset(open_dataset(tmp_path, classes=THREE, val_fraction=0))
    assert report.ok, report.problems  # not "nothing named anim.* in images/"
    assert report.counts == {"train": 3} and report.sizes == {"16x24": 3}
    framed = [n for n in report.notices if "frame 1 of" in n]
    assert len(framed) == 2, report.notices
    assert any(n.startswith("anim.gif: animated GIF with 3 frames: frame 1 of 3 is used") for n in framed)
    assert any(n.startswith("pages.tif: multi-page TIFF with 2 frames: frame 1 of 2 is used") for n in framed)
    THREE.save(tmp_path / "classes.json")
    result = cli("data", "check", tmp_path, "--val-fraction", "0")
    assert result.exit_code == 0, result.output
    assert "anim.gif" in result.output and "frame 1 of 3" in result.output and "nothing named" not in result.output
