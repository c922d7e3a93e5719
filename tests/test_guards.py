"""Output guards of predict, overlay, export and evaluate (issue 11): --out may not be an input folder or replace
an input, --force replaces only an earlier export, a location that cannot take files fails in one line before
the work, and paths are printed as written (no rich markup). Every refusal leaves the user's files as they were."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import segcli.files as files  # noqa: E402
from segcli.data import default_classes, write_image, write_mask_png  # noqa: E402
from segcli.files import TMP_TAG, mark_segcli_folder  # noqa: E402
from segcli.modelfile import save_model  # noqa: E402
from segcli.models import build_model  # noqa: E402

CLASSES = default_classes(3, ["sky", "road", "car"])


def image(h=16, w=20, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def snapshot(folder: Path) -> dict:
    """Every file below ``folder`` (hidden ones included) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(result, *names):
    """Exit 2, exactly one line on stderr, no traceback, no temporary name, and each of ``names`` in it."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output and TMP_TAG not in result.stderr and ".probe" not in result.stderr
    for name in names:
        assert str(name) in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("guards_model") / "tiny.keras"
    save_model(build_model("unet", 3, depth=2, base_filters=4, convs_per_block=1), path, CLASSES)
    return path


@pytest.fixture
def model_copy(model_file, tmp_path):
    """The model in a folder of its own (exports land beside it)."""
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(model_file, folder / "model.keras")
    return folder / "model.keras"


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    for i in range(2):
        write_image(folder / f"im{i}.png", image(seed=i))
    (folder / "notes.txt").write_text("mine")
    return folder


@pytest.fixture
def read_only(monkeypatch):
    """Make folders refuse new files, as a read-only folder does for a normal user (root ignores chmod)."""
    blocked: list[Path] = []

    def refusing(real):  # every new file or folder segcli makes starts as one of these, beside its target
        def make(path, *args, **kwargs):
            folder = Path(path).parent
            if any(folder.resolve() == b.resolve() for b in blocked):
                raise PermissionError(13, "Permission denied", str(folder))
            return real(path, *args, **kwargs)
        return make

    monkeypatch.setattr(files, "new_temp_file", refusing(files.new_temp_file))
    monkeypatch.setattr(files, "new_temp_dir", refusing(files.new_temp_dir))
    return blocked.append


# --- predict ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["folder", "file", "relative", "link"])
def test_predict_refuses_an_out_that_holds_the_inputs(cli, model_file, images, tmp_path, how):
    before = snapshot(images)
    if how == "folder":
        args = [images, "--out", images]
    elif how == "file":
        args = [images / "im0.png", "--out", images]
    elif how == "relative":
        args = [images / "im1.png", "--out", images / ".." / "imgs" / "."]
    else:
        os.symlink(images, tmp_path / "alias")
        args = [images, "--out", tmp_path / "alias"]
    result = cli("predict", model_file, *args)
    assert "folder of the input image" in one_line_error(result)
    assert snapshot(images) == before  # no input replaced, no mask written among them


def test_predict_never_writes_through_an_output_name_onto_an_input(cli, model_file, images, tmp_path):
    out = tmp_path / "preds"
    out.mkdir()
    os.link(images / "im0.png", out / "im0.png")  # the input is also there, under the mask's name
    before = snapshot(images)
    result = cli("predict", model_file, images / "im0.png", "--out", out)
    assert "would overwrite the input" in one_line_error(result, out)
    assert snapshot(images) == before and (out / "im0.png").read_bytes() == before["im0.png"]


def test_predict_rerun_replaces_its_own_masks_and_keeps_other_files(cli, model_file, images, tmp_path):
    out = tmp_path / "preds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    before = snapshot(images)
    for _ in range(2):  # the second run replaces the masks of the first
        result = cli("predict", model_file, images, "--out", out)
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.name != ".segcli") == ["im0.png", "im1.png", "keep.txt"]
    assert (out / "keep.txt").read_text() == "mine" and snapshot(images) == before


def test_predict_never_replaces_a_users_file_that_has_a_masks_name(cli, model_file, images, tmp_path):
    """The user's ground truth (or any file of theirs) named like an output is never overwritten, even in a
    folder predict has written into before: only the names predict wrote there may be replaced."""
    truth = tmp_path / "valannot"
    truth.mkdir()
    (truth / "im0.png").write_bytes(b"ground truth")
    result = cli("predict", model_file, images, "--out", truth)
    assert "im0.png exists in --out" in one_line_error(result, truth)
    assert (truth / "im0.png").read_bytes() == b"ground truth" and sorted(p.name for p in truth.iterdir()) == ["im0.png"]

    out = tmp_path / "preds"
    assert cli("predict", model_file, images / "im1.png", "--out", out).exit_code == 0
    (out / "im0.png").write_bytes(b"mine")  # the user's file, in predict's folder, under another output's name
    result = cli("predict", model_file, images, "--out", out)
    assert "im0.png exists in --out" in one_line_error(result, out)
    assert (out / "im0.png").read_bytes() == b"mine"


def test_ctrl_c_in_predict_is_one_line_and_exit_130(cli, model_file, images, tmp_path, monkeypatch):
    import segcli.inference

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(segcli.inference, "predict_files", interrupted)
    result = cli("predict", model_file, images, "--out", tmp_path / "p")
    assert result.exit_code == 130 and result.stderr.strip() == "interrupted", result.output


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_out_below_a_file_fails_before_the_model_loads(cli, command, images, sample_data, tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    missing_model = tmp_path / "nope.keras"  # the --out check comes first: this is never opened
    inputs = images if command == "predict" else sample_data
    result = cli(command, missing_model, inputs, "--out", blocker / "out")
    assert "is a file, not a folder" in one_line_error(result, blocker)
    assert blocker.read_text() == "mine"


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_read_only_out_fails_before_the_model_loads(cli, command, images, sample_data, tmp_path, read_only):
    out = tmp_path / "ro"
    out.mkdir()
    read_only(out)
    result = cli(command, tmp_path / "nope.keras", images if command == "predict" else sample_data, "--out", out)
    assert "cannot write here" in one_line_error(result, out)
    assert list(out.iterdir()) == []


def test_predict_new_out_in_a_read_only_folder(cli, images, tmp_path, read_only):
    read_only(tmp_path)
    result = cli("predict", "nope.keras", images, "--out", tmp_path / "new" / "preds")  # the model is never opened
    line = one_line_error(result, tmp_path)
    assert "cannot write here" in line and "nope.keras" not in line
    assert not (tmp_path / "new").exists()


# --- overlay ------------------------------------------------------------------------------------------

@pytest.fixture
def pair(tmp_path):
    labels = np.zeros((16, 20), np.uint8)
    labels[:, 10:] = 1
    write_image(tmp_path / "img.png", image())
    write_mask_png(tmp_path / "mask.png", labels, CLASSES.palette())
    CLASSES.save(tmp_path / "classes.json")
    return tmp_path / "img.png", tmp_path / "mask.png"


def test_overlay_into_an_existing_folder(cli, pair, tmp_path):
    out = tmp_path / "shown"
    out.mkdir()
    result = cli("overlay", *pair, "--out", out)
    assert result.exit_code == 0, result.output
    assert (out / "img_overlay.png").is_file()
    assert str(out / "img_overlay.png") in result.stdout


@pytest.mark.parametrize("case", ["no extension", "the image", "the mask", "below a file"])
def test_overlay_bad_out_is_one_line(cli, pair, tmp_path, case):
    before = snapshot(tmp_path)
    out = {"no extension": tmp_path / "result", "the image": pair[0], "the mask": pair[1],
           "below a file": pair[0] / "x.png"}[case]
    result = cli("overlay", *pair, "--out", out)
    one_line_error(result, pair[0] if case == "below a file" else out)
    assert snapshot(tmp_path) == before


def test_overlay_read_only_folder(cli, pair, tmp_path, read_only):
    out = tmp_path / "ro"
    out.mkdir()
    read_only(out)
    result = cli("overlay", *pair, "--out", out / "o.png")
    assert "cannot write here" in one_line_error(result, out)
    assert list(out.iterdir()) == []


# --- export -------------------------------------------------------------------------------------------

def test_export_force_never_replaces_a_users_folder(cli, model_copy, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    before, around = snapshot(mine), snapshot(tmp_path)
    for fmt in ("savedmodel", "tflite", "onnx"):
        result = cli("export", model_copy, "--format", fmt, "--out", mine, "--force")
        one_line_error(result, mine)
        assert snapshot(mine) == before
        assert snapshot(tmp_path) == around  # no classes.json in the parent either


def test_export_force_never_replaces_a_run_folder(cli, model_copy):
    run = model_copy.parent
    (run / "run.json").write_text("{}")
    (run / "recipe.toml").write_text("")
    other = run.parent / "other.keras"
    shutil.copy(model_copy, other)
    before = snapshot(run)
    result = cli("export", other, "--format", "savedmodel", "--out", run, "--force")
    assert "run folder" in one_line_error(result, run)
    assert snapshot(run) == before


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_export_force_never_replaces_a_file_of_another_kind(cli, model_copy, fmt):
    target = model_copy.with_name(f"notes.{fmt}")
    target.write_text("not a model")
    result = cli("export", model_copy, "--format", fmt, "--out", target, "--force")
    one_line_error(result, target)
    assert target.read_text() == "not a model"
    assert not (model_copy.parent / "classes.json").exists()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_export_force_replaces_a_file_of_the_same_format(cli, model_copy):
    target = model_copy.with_name("old.tflite")
    target.write_bytes(b"\0\0\0\0TFL3" + b"\0" * 32)  # the TFLite magic: an earlier export (of another model)
    result = cli("export", model_copy, "--format", "tflite", "--out", target)
    assert "--force" in one_line_error(result, target)
    assert target.read_bytes()[8:] == b"\0" * 32
    result = cli("export", model_copy, "--format", "tflite", "--out", target, "--force")
    assert result.exit_code == 0, result.output
    assert target.read_bytes()[4:8] == b"TFL3" and target.stat().st_size > 1000
    assert (model_copy.parent / "classes.json").is_file()


def test_export_out_below_a_file_and_read_only(cli, model_copy, tmp_path, read_only):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    result = cli("export", model_copy, "--format", "tflite", "--out", blocker / "m.tflite")
    assert "is a file, not a folder" in one_line_error(result, blocker)
    ro = tmp_path / "ro"
    ro.mkdir()
    read_only(ro)
    result = cli("export", model_copy, "--format", "savedmodel", "--out", ro / "sm")
    assert "cannot write here" in one_line_error(result, ro)
    assert list(ro.iterdir()) == [] and blocker.read_text() == "mine"


def test_export_force_replaces_an_earlier_savedmodel_export(cli, model_copy):
    out = model_copy.parent / "exported"
    out.mkdir()
    (out / "saved_model.pb").write_bytes(b"old")
    mark_segcli_folder(out, "export")  # what an earlier export left
    result = cli("export", model_copy, "--format", "savedmodel", "--out", out)
    assert "--force" in one_line_error(result, out)
    assert (out / "saved_model.pb").read_bytes() == b"old"
    result = cli("export", model_copy, "--format", "savedmodel", "--out", out, "--force")
    assert result.exit_code == 0, result.output
    assert (out / "saved_model.pb").read_bytes() != b"old"
    assert files.segcli_folder_kind(out) == "export"
    assert (out / "classes.json").is_file() and not (model_copy.parent / "classes.json").exists()
    assert not [p for p in model_copy.parent.iterdir() if TMP_TAG in p.name]


# --- evaluate -----------------------------------------------------------------------------------------

# --- paths printed as written -------------------------------------------------------------------------

def test_paths_with_brackets_are_printed_as_written(cli, model_file, tmp_path):
    folder = tmp_path / "a[/b"
    write_image(folder / "img[red].png", image())
    out = tmp_path / "out[bold]"
    result = cli("predict", model_file, folder, "--out", out)
    assert result.exit_code == 0, result.output
    assert (out / "img[red].png").is_file()
    assert f"written to {out}/" in result.stdout

    missing = folder / "gone[red].png"
    result = cli("predict", model_file, missing, "--out", out)
    one_line_error(result, missing)

    write_mask_png(folder / "mask[1].png", np.ones((16, 20), np.uint8), CLASSES.palette())
    result = cli("overlay", folder / "img[red].png", folder / "mask[1].png", "--out", folder / "x[/i].png")
    assert result.exit_code == 0, result.output
    assert f"wrote {folder / 'x[/i].png'}" in result.stdout and (folder / "x[/i].png").is_file()


def test_bracketed_folder_and_class_names_through_data_check_and_evaluate(cli, model_file, tmp_path):
    root = tmp_path / "d[/b]"
    for split in ("train", "val"):
        for i in range(2):
            labels = np.zeros((16, 20), np.uint8)
            labels[:, 10:] = 1 + i
            write_image(root / split / f"p{i}.png", image(seed=i))
            write_mask_png(root / f"{split}annot" / f"p{i}.png", labels, CLASSES.palette())
    classes = default_classes(3, ["sky[red]", "road[/]", "car"])
    classes.save(root / "classes.json")
    result = cli("data", "check", root)
    assert result.exit_code == 0, result.output
    assert str(root) in result.stdout and "sky[red]" in result.stdout and "road[/]" in result.stdout

    out = tmp_path / "eval[bold]"
    result = cli("evaluate", model_file, root, "--out", out)
    assert result.exit_code == 0, result.output
    assert "sky[red]" in result.stdout and f"outputs: {out}/" in result.stdout
    assert (out / "evaluation.json").is_file()
