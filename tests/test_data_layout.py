"""Dataset layouts, pairing, the held-out val split, where classes come from."""

import cv2
import numpy as np
import pytest

from segcli.data import ClassMap, open_dataset
from segcli.errors import DataError


def pair(image_dir, mask_dir, name, mask_name=None, value=1):
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(image_dir / f"{name}.png"), np.full((16, 24, 3), 100, np.uint8))
    labels = np.zeros((16, 24), np.uint8)
    labels[:, 12:] = value
    cv2.imwrite(str(mask_dir / (mask_name or f"{name}.png")), labels)


def test_split_folders(tmp_path):
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        for i in range(n):
            pair(tmp_path / split, tmp_path / f"{split}annot", f"{split}{i}")
    ds = open_dataset(tmp_path)
    assert ds.layout == "split-folders" and ds.encoding == "index"
    assert {s: len(p) for s, p in ds.splits.items()} == {"train": 3, "val": 2, "test": 1}
    assert not ds.problems and ds.classes_source == "inferred" and ds.classes.num_classes == 2
    assert ds.splits["val"][0].mask.parent.name == "valannot"


def test_images_masks_flat_with_mask_suffix_and_other_extension(tmp_path):
    for i in range(10):
        pair(tmp_path / "images", tmp_path / "masks", f"img{i}", mask_name=f"img{i}_mask.png")
    cv2.imwrite(str(tmp_path / "images" / "x.jpg"), np.zeros((16, 24, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "masks" / "orphan.bmp"), np.zeros((16, 24), np.uint8))
    ds = open_dataset(tmp_path, val_fraction=0.2)
    assert ds.layout == "images-masks"
    assert len(ds.splits["train"]) == 8 and len(ds.splits["val"]) == 2
    assert any("held out as val" in n for n in ds.notices)
    assert ds.pairs[0].mask.name.endswith("_mask.png")
    found = {p.path.name: p.problem for p in ds.problems}
    assert "image without mask" in found["x.jpg"] and "mask without image" in found["orphan.bmp"]


def test_images_masks_per_split(tmp_path):
    for split in ("train", "val"):
        for i in range(2):
            pair(tmp_path / split / "images", tmp_path / split / "masks", f"{split}{i}")
    ds = open_dataset(tmp_path)
    assert ds.layout == "images-masks" and {s: len(p) for s, p in ds.splits.items()} == {"train": 2, "val": 2}


@pytest.mark.parametrize("header", [True, False])
def test_csv_file_or_folder_with_one_csv(tmp_path, header):
    for i in range(4):
        pair(tmp_path / "im", tmp_path / "lab", f"p{i}")
    rows = [f"im/p{i}.png,lab/p{i}.png" + (",val" if i == 3 else "") for i in range(4)]
    (tmp_path / "list.csv").write_text("\n".join((["image,mask,split"] if header else []) + rows) + "\n")
    for root in (tmp_path / "list.csv", tmp_path):
        ds = open_dataset(root)
        assert ds.layout == "csv" and {s: len(p) for s, p in ds.splits.items()} == {"train": 3, "val": 1}


def test_csv_missing_file_is_a_problem(tmp_path):
    pair(tmp_path, tmp_path, "a", mask_name="a_m.png")
    (tmp_path / "d.csv").write_text("a.png,a_m.png\nb.png,b_m.png\n")
    ds = open_dataset(tmp_path / "d.csv")
    assert len(ds.pairs) == 1 and ds.problems[0].path.name == "b.png"


def test_val_split_is_seeded_and_deterministic(tmp_path):
    for i in range(20):
        pair(tmp_path / "images", tmp_path / "masks", f"{i:02d}")

    def val(**kw):
        return [p.image.name for p in open_dataset(tmp_path, **kw).splits["val"]]

    assert val(seed=0) == val(seed=0) and len(val(seed=0)) == 2
    assert val(seed=0) != val(seed=1)
    assert len(val(val_fraction=0.01)) == 1  # at least one
    assert "val" not in open_dataset(tmp_path, val_fraction=0).splits


def test_classes_from_root_file_or_argument(tmp_path):
    pair(tmp_path / "images", tmp_path / "masks", "a", value=2)
    three = ClassMap(("x", "y", "z"), ((1, 1, 1), (2, 2, 2), (3, 3, 3)))
    assert open_dataset(tmp_path, classes=three).classes_source == "given"
    three.save(tmp_path / "classes.json")
    ds = open_dataset(tmp_path)
    assert ds.classes == three and ds.classes_source.startswith("file:")
    three.save(tmp_path / "other.json")
    assert open_dataset(tmp_path, classes=tmp_path / "other.json").classes_source == f"file:{tmp_path / 'other.json'}"


def test_inferred_classes_treat_255_as_void(tmp_path):
    pair(tmp_path / "images", tmp_path / "masks", "a", value=255)
    pair(tmp_path / "images", tmp_path / "masks", "b", value=4)
    ds = open_dataset(tmp_path, classes=None)
    assert ds.classes.num_classes == 5 and ds.classes.ignore_index == 255
    assert "inferred 5 classes" in ds.notices[-1]


def test_binary_masks_give_two_classes_and_a_notice(tmp_path):
    pair(tmp_path / "images", tmp_path / "masks", "a", value=255)
    ds = open_dataset(tmp_path)
    assert ds.encoding == "binary" and ds.classes.names == ("background", "foreground")
    assert "masks are 0/255 binary: read as 0/1 (background, foreground)" in ds.notices


def test_bad_roots(tmp_path):
    with pytest.raises(DataError, match="no such file or directory"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DataError, match="no dataset layout recognised; expected DIR/train"):
        open_dataset(tmp_path / "stuff")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="no image/mask pairs"):
        open_dataset(tmp_path)
