"""benchmarks/peers/ultralytics_camvid.py without Ultralytics: the dataset YAML it writes for the peer holds the
same CamVid pairs and labels as segcli reads (void ignored), and its --json file is a docs/results table."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from segcli.data import load_labels, open_dataset

from conftest import script_module


@pytest.fixture(scope="module")
def peers():
    return script_module("benchmarks/peers/ultralytics_camvid.py")


def camvid_folder(root: Path, counts: dict) -> Path:
    """CamVid's layout (train/ + trainannot/, val/ + valannot/), 12x16 PNGs whose masks hold every label 0..11
    (11: void), a different arrangement per image."""
    rng = np.random.default_rng(0)
    for split, n in counts.items():
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for i in range(n):
            mask = rng.permutation(np.arange(192) % 12).reshape(12, 16).astype(np.uint8)
            cv2.imwrite(str(root / split / f"0001TP_{i:03d}.png"), rng.integers(0, 256, (12, 16, 3), np.uint8))
            cv2.imwrite(str(root / f"{split}annot" / f"0001TP_{i:03d}.png"), mask)
    return root


def test_the_peers_dataset_yaml_holds_the_same_pairs_and_labels_with_void_ignored(peers, tmp_path):
    data = camvid_folder(tmp_path / "camvid", {"train": 3, "val": 2})
    dataset, pairs = peers.camvid_dataset(data, limit=2)
    assert {split: len(found) for split, found in pairs.items()} == {"train": 2, "val": 2}

    peer = open_dataset(peers.write_ultralytics_dataset(dataset.classes, pairs, tmp_path / "yolo"))
    assert peer.classes.names == dataset.classes.names and len(peer.classes.names) == 11
    for split in ("train", "val"):
        assert [p.image.name for p in peer.splits[split]] == [p.image.name for p in pairs[split]]
        for ours, theirs in zip(pairs[split], peer.splits[split]):
            assert theirs.image.resolve() == ours.image.resolve()  # links, never copies
            want = load_labels(ours, dataset.encoding, dataset.classes, dataset.label_mapping)
            got = load_labels(theirs, peer.encoding, peer.classes, peer.label_mapping)
            void = want == dataset.classes.ignore_index
            assert void.any() and np.array_equal(got == peer.classes.ignore_index, void)
            assert np.array_equal(got[~void], want[~void])


def test_a_work_folder_inside_the_dataset_or_one_in_use_is_refused(peers, tmp_path):
    data = camvid_folder(tmp_path / "camvid", {"train": 1, "val": 1})
    with pytest.raises(SystemExit, match="inside the dataset"):
        peers.check_work_folder(data / "work", data)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    with pytest.raises(SystemExit, match="not an empty folder"):
        peers.check_work_folder(tmp_path / "used", data)
    peers.check_work_folder(tmp_path / "new", data)  # a new folder is fine


def test_the_json_file_renders_as_a_results_table(peers, tmp_path):
    results_table = script_module("scripts/docs_tables.py").results_table
    rows = [{"tool": "peer", "epochs": 11, "train_seconds": 1830.0, "wall_seconds": None, "miou": 0.31,
             "pixel_accuracy": 0.768, "miou_last": 0.305, "own_miou": 0.31},
            {"tool": "segcli", "epochs": 44, "train_seconds": 1578.0, "wall_seconds": 1812.0, "miou": 0.634,
             "pixel_accuracy": 0.892, "miou_last": 0.631}]
    result = {"command": "python benchmarks/peers/ultralytics_camvid.py --minutes 30", "rows": rows,
              "val_images": 101, "train_images": 367, "minutes": 30.0}
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "peers.json").write_text(json.dumps({**result, **peers.table_keys(result)}))
    table = results_table(tmp_path, "peers").splitlines()
    assert table[2] == "| peer | 11 | 30.5 min |  | 31.0% | 30.5% | 76.8% | 31.0% |"
    assert table[3] == "| segcli | 44 | 26.3 min | 30.2 min | 63.4% | 63.1% | 89.2% |  |"
    assert "CPU: " in table[5] and "command: `python benchmarks/peers/ultralytics_camvid.py --minutes 30`" in table[5]
