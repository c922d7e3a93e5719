"""Outputs reached through symlinks are judged by their targets (segcli.files.guard_output, check_replaceable),
for every writer: a link to a segcli run folder is replaced as --force allows, anything else is refused naming
the link and its target; an output that leads into the data (export, evaluate's reports, run folders) is
refused and writes nothing there."""

import json
import os

import pytest

from segcli.errors import SegcliError
from segcli.export.guards import check_output
from segcli.files import check_replaceable, guard_output, mark_segcli_folder
from segcli.runfolder import RunFolder


def run_folder(path):
    path.mkdir(parents=True)
    mark_segcli_folder(path, "run")
    (path / "model.keras").write_bytes(b"old model")
    return path


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_force_replaces_the_run_folder_a_link_leads_to(tmp_path):
    target = run_folder(tmp_path / "runs" / "r1")
    link = tmp_path / "latest"
    os.symlink(target, link)
    with pytest.raises(SegcliError, match="pass --force") as info:  # judged as the run folder it is
        check_replaceable(link, False, "run folder", kind="run")
    assert str(target) in str(info.value)
    run = RunFolder.create(link, "unet", force=True)
    assert run.path == link and link.is_symlink() and os.readlink(link) == str(target)
    assert not (target / "model.keras").exists() and (target / ".segcli").is_file()  # emptied, marked again


@pytest.mark.parametrize("what", ["user folder", "file", "broken"])
def test_a_link_to_anything_else_is_refused_naming_both(tmp_path, what):
    target = tmp_path / "mine"
    if what == "user folder":
        target.mkdir()
        (target / "notes.txt").write_text("keep")
    elif what == "file":
        target.write_text("keep")
    link = tmp_path / "out"
    os.symlink(target, link)
    with pytest.raises(SegcliError) as info:
        RunFolder.create(link, "unet", force=True)
    message = str(info.value)
    assert str(link) in message and f"links to {target}" in message, message
    assert "\n" not in message
    if what == "user folder":
        assert (target / "notes.txt").read_text() == "keep"
    elif what == "file":
        assert target.read_text() == "keep"


def test_train_cli_with_a_link_to_a_folder_it_did_not_make(cli, tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep")
    os.symlink(target, tmp_path / "out")
    result = cli("train", "unet", tmp_path / "nodata", "--out", tmp_path / "out", "--force")
    assert result.exit_code == 2, result.output
    assert "was not made by segcli" in result.output and f"links to {target}" in result.output
    assert (target / "notes.txt").read_text() == "keep"


def data_and_model(tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "images" / "a.png").write_bytes(b"image")
    run = tmp_path / "run0"
    run.mkdir()
    (run / "model.keras").write_bytes(b"a model")
    (run / "run.json").write_text(json.dumps({"data_dir": str(data.resolve())}))
    return data, run / "model.keras"


@pytest.mark.parametrize("fmt, name", [("onnx", "x.onnx"), ("tflite", "x.tflite"), ("savedmodel", "x_savedmodel")])
def test_export_through_a_link_into_the_data_is_refused(tmp_path, fmt, name):
    data, model = data_and_model(tmp_path)
    os.symlink(data / "images", tmp_path / "link")
    before = snapshot(data)
    with pytest.raises(SegcliError) as info:
        check_output(model, tmp_path / "link" / name, fmt, force=True)
    message = str(info.value)
    assert f"links to {data / 'images' / name}" in message and "inside the data folder" in message, message
    assert snapshot(data) == before
    check_output(model, tmp_path / "elsewhere" / name, fmt, force=False)  # outside the data: fine


def test_export_cli_refuses_a_link_into_the_data(cli, tmp_path):
    data, model = data_and_model(tmp_path)
    os.symlink(data / "images", tmp_path / "link")
    before = snapshot(data)
    result = cli("export", model, "--format", "savedmodel", "--out", tmp_path / "link" / "x")
    assert result.exit_code == 2, result.output
    assert "inside the data folder" in result.output or "needs" in result.output  # the backend's line comes first
    assert snapshot(data) == before


def test_evaluate_reports_through_a_link_into_the_data_are_refused(tmp_path):
    from segcli.evaluation import evaluate

    data, _ = data_and_model(tmp_path)
    os.symlink(data, tmp_path / "link")
    with pytest.raises(SegcliError, match="inside the data folder"):
        evaluate(None, data, out_dir=tmp_path / "link" / "reports")  # refused before the model is used
    assert not (data / "reports").exists()


def test_guard_output_follows_links_among_the_folders(tmp_path):
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    image.write_bytes(b"x")
    os.symlink(tmp_path / "in", tmp_path / "alias")
    with pytest.raises(SegcliError, match="the input"):
        guard_output(tmp_path / "alias" / "a.png", [image])
    with pytest.raises(SegcliError, match="inside the data folder"):
        guard_output(tmp_path / "alias" / "sub" / "x.png", [tmp_path / "in"])
    assert guard_output(tmp_path / "alias" / "b.png", [image]) == (tmp_path / "in" / "b.png").resolve()


def test_compare_folder_through_a_link_into_the_data_is_refused(tmp_path):
    from segcli.compare import compare

    data, _ = data_and_model(tmp_path)
    os.symlink(data, tmp_path / "link")
    before = snapshot(data)
    with pytest.raises(SegcliError, match="inside the data folder"):
        compare(["unet"], data, tmp_path / "link" / "cmp")  # refused before any training
    assert snapshot(data) == before and not (data / "cmp").exists()
