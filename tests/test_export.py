"""segcli.export and `segcli export`: SavedModel / ONNX / TFLite round trips on a tiny U-Net."""

import json
import os
import shutil

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import segcli.export as export  # noqa: E402
from segcli.data import default_classes  # noqa: E402
from segcli.export import ExportError, export_model, missing_onnx_packages  # noqa: E402
from segcli.modelfile import load_model, save_model  # noqa: E402
from segcli.models import build_model  # noqa: E402
from segcli.precision import policy, reduced_policy  # noqa: E402
from segcli import backend as backends  # noqa: E402

TINY = dict(depth=2, base_filters=4, convs_per_block=1)  # output stride 4, ~6k parameters
SIZES = [(32, 48), (40, 24)]  # two input sizes for the dynamic formats (multiples of the stride)
ONNX_MISSING = missing_onnx_packages()
needs_onnx = pytest.mark.skipif(bool(ONNX_MISSING), reason=f"export extra not installed ({', '.join(ONNX_MISSING)}): "
                                                           "pip install -e '.[export]'")


def _image(h, w, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (1, h, w, 3)).astype(np.float32)


def _keras(model, x):
    return model.predict(x, verbose=0)


def _tolerance(ref):
    return 1e-3 * max(1.0, float(np.abs(ref).max()))


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_models")
    keras.utils.set_random_seed(0)
    save_model(build_model("unet", 3, **TINY), root / "float32.keras", default_classes(3))
    with policy("mixed_bfloat16"):
        mixed = build_model("unet", 3, **TINY)
    mixed.save(root / "mixed.keras")  # plain Keras keeps the policy (segcli's save_model writes float32)
    return root


@pytest.fixture
def model_file(model_files, tmp_path):
    """A fresh copy of the float32 model in its own folder (exports land beside it)."""
    path = tmp_path / "model.keras"
    shutil.copy(model_files / "float32.keras", path)
    return path


@pytest.fixture
def mixed_file(model_files, tmp_path):
    path = tmp_path / "mixed.keras"
    shutil.copy(model_files / "mixed.keras", path)
    return path


def _assert_exported(result, path):
    """Exit 0 and the model's classes.json: inside a SavedModel folder, beside an .onnx/.tflite file."""
    assert result.exit_code == 0, result.output
    assert "max abs diff" in result.output
    classes = path / "classes.json" if path.is_dir() else path.parent / "classes.json"
    assert classes.is_file() and str(classes) in result.output
    saved = json.loads(classes.read_text())
    assert saved == default_classes(3).to_dict()


# --- round trips ----------------------------------------------------------------------------------

def test_savedmodel_round_trip(cli, model_file):
    out = model_file.parent / "exported"
    result = cli("export", model_file, "--format", "savedmodel", "--out", out)
    _assert_exported(result, out)
    assert (out / "saved_model.pb").is_file()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folder left
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # a folder's usual mode (mkdtemp's is 0700)
    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    model = load_model(model_file, precision="float32").model
    for i, (h, w) in enumerate(SIZES):
        x = _image(h, w, seed=i)
        got = next(iter(serve(image=tf.constant(x)).values())).numpy()
        ref = _keras(model, x)
        assert got.shape == (1, h, w, 3) and got.dtype == np.float32
        assert np.abs(got - ref).max() < _tolerance(ref)


@needs_onnx
def test_onnx_round_trip(cli, model_file):
    import onnx
    import onnxruntime as ort

    result = cli("export", model_file, "--format", "onnx")
    out = model_file.with_suffix(".onnx")
    _assert_exported(result, out)
    proto = onnx.load(str(out))
    assert [o.name for o in proto.graph.output] == ["logits"]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "height", "width", 3]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    model = load_model(model_file, precision="float32").model
    for i, (h, w) in enumerate(SIZES):
        x = _image(h, w, seed=i)
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        ref = _keras(model, x)
        assert got.shape == (1, h, w, 3)
        assert np.abs(got - ref).max() < _tolerance(ref)


def _tflite_run(path, x):
    interpreter = tf.lite.Interpreter(model_path=str(path))
    inp = interpreter.get_input_details()[0]
    if tuple(inp["shape"]) != x.shape:
        interpreter.resize_tensor_input(inp["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_tflite_round_trip_with_dynamic_height_and_width(cli, model_file):
    out = model_file.parent / "sub" / "m.tflite"
    result = cli("export", model_file, "--format", "tflite", "--out", out)
    _assert_exported(result, out)
    assert "any batch, height and width" in result.output
    model = load_model(model_file, precision="float32").model
    for i, (h, w) in enumerate(SIZES):
        x = _image(h, w, seed=i)
        got, ref = _tflite_run(out, x), _keras(model, x)
        assert got.shape == (1, h, w, 3)
        assert np.abs(got - ref).max() < _tolerance(ref)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_tflite_fixed_size_is_rounded_up_to_the_stride(model_file):
    out = model_file.with_suffix(".tflite")
    result = export_model(model_file, "tflite", size="30x45")
    assert result.fixed_size == (32, 48) and result.path == out
    assert any("rounded up to 32x48" in n for n in result.notes)
    interpreter = tf.lite.Interpreter(model_path=str(out))
    assert list(interpreter.get_input_details()[0]["shape"]) == [1, 32, 48, 3]
    x = _image(32, 48)
    ref = _keras(load_model(model_file, precision="float32").model, x)
    assert np.abs(_tflite_run(out, x) - ref).max() < _tolerance(ref)
    assert result.max_abs_diff < result.tolerance


def test_a_mixed_bfloat16_model_exports_as_float32(cli, mixed_file):
    assert reduced_policy(load_model(mixed_file, precision=None).model) == "mixed_bfloat16"
    out = mixed_file.parent / "mixed_savedmodel"
    result = cli("export", mixed_file, "-f", "savedmodel")
    _assert_exported(result, out)
    assert "float32 from the mixed_bfloat16 policy" in result.output
    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    assert "DT_BFLOAT16" not in str(serve.graph.as_graph_def())  # no bf16 op anywhere in the graph
    x = _image(32, 48)
    got = next(iter(serve(image=tf.constant(x)).values())).numpy()
    ref = _keras(load_model(mixed_file, precision="float32").model, x)
    assert got.dtype == np.float32
    assert np.abs(got - ref).max() < _tolerance(ref)


# --- refusals ---------------------------------------------------------------------------------------

def test_onnx_without_the_extra_says_how_to_install_it(cli, model_file, monkeypatch):
    monkeypatch.setattr(export.guards, "find_spec", lambda name: None if name == "tf2onnx" else object())
    result = cli("export", model_file, "--format", "onnx")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "tf2onnx" in lines[0] and "pip install 'segcli[export]'" in lines[0]
    assert not model_file.with_suffix(".onnx").exists()


def test_an_earlier_export_is_replaced_only_with_force_and_a_users_folder_never(cli, model_file):
    out = model_file.parent / "model_savedmodel"  # the default name
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    for extra in ([], ["--force"]):  # a folder segcli did not make: refused, --force or not
        result = cli("export", model_file, "--format", "savedmodel", *extra)
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
        assert "choose another --out" in result.stderr
        assert sorted(p.name for p in out.iterdir()) == ["old.txt"] and (out / "old.txt").read_text() == "keep me"
    (out / "old.txt").unlink()  # an empty folder may be filled
    _assert_exported(cli("export", model_file, "--format", "savedmodel"), out)
    (out / "stale.txt").write_text("from the first export")  # to tell the old folder from the new one
    result = cli("export", model_file, "--format", "savedmodel")  # an earlier export: only with --force
    assert result.exit_code == 2 and "pass --force" in result.stderr and (out / "stale.txt").is_file()
    _assert_exported(cli("export", model_file, "--format", "savedmodel", "--force"), out)
    assert (out / "saved_model.pb").is_file() and not (out / "stale.txt").exists()
    assert not [p for p in model_file.parent.iterdir() if p.name.startswith(".")]  # nothing moved aside is left


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_an_export_removes_what_a_killed_export_of_it_left_and_nothing_else(cli, model_file):
    """A kill -9 of an export leaves its temporaries beside the output (the file, the scratch folder of TFLite's
    SavedModel, classes.json's): the next export of that output removes them. A file of the user's with a
    similar name, another output's temporary and one whose writer still runs (this process) stay."""
    import subprocess
    import sys

    from segcli.files import TMP_TAG

    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, timeout=60).stdout)
    folder = model_file.parent
    scratch = folder / f".model.tflite{TMP_TAG}{gone}-1a2b3c4d"  # _write_tflite's scratch folder
    (scratch / "savedmodel").mkdir(parents=True)
    (scratch / "savedmodel" / "saved_model.pb").write_bytes(b"partial")
    left = [folder / f".model.tflite{TMP_TAG}{gone}-0a1b2c3d.tflite",
            folder / f".classes.json{TMP_TAG}{gone}-0a1b2c3d.json"]
    kept = [folder / f".model.tflite{TMP_TAG}notes.txt", folder / f"model.tflite{TMP_TAG}{gone}-0a1b2c3d.tflite",
            folder / ".model.tflite.bak", folder / f".other.tflite{TMP_TAG}{gone}-0a1b2c3d.tflite",
            folder / f".model.tflite{TMP_TAG}{os.getpid()}-0a1b2c3d.tflite"]
    for path in left + kept:
        path.write_bytes(b"partial")
    _assert_exported(cli("export", model_file, "--format", "tflite"), model_file.with_suffix(".tflite"))
    assert not scratch.exists() and not [p for p in left if p.exists()]
    assert all(p.read_bytes() == b"partial" for p in kept)
    temporaries = lambda paths: sorted(p.name for p in paths if TMP_TAG in p.name)  # noqa: E731
    assert temporaries(folder.iterdir()) == temporaries(kept)  # and none of its own


def test_a_different_classes_json_beside_is_kept_without_force(cli, model_file):
    other = default_classes(3, names=["sky", "road", "car"])
    other.save(model_file.parent / "classes.json")
    result = cli("export", model_file, "--format", "tflite")
    assert result.exit_code == 2
    assert "classes.json" in result.output and "--force" in result.output
    assert not model_file.with_suffix(".tflite").exists()
    assert json.loads((model_file.parent / "classes.json").read_text()) == other.to_dict()


def test_an_export_that_differs_from_keras_fails_and_leaves_nothing(model_file, monkeypatch):
    real = export.formats.keras_reference
    monkeypatch.setattr(export.formats, "keras_reference", lambda model, x: real(model, x) + 1.0)
    with pytest.raises(ExportError, match="does not reproduce the Keras model"):
        export_model(model_file, "savedmodel")
    assert sorted(p.name for p in model_file.parent.iterdir()) == ["model.keras"]


@pytest.mark.parametrize("args, message", [
    (["--format", "pytorch"], "unknown export format"),
    (["--format", "onnx", "--size", "32x32"], "--size applies to --format tflite only"),
    (["--format", "tflite", "--size", "big"], "bad --size"),
    (["--format", "savedmodel", "--out", "{model}", "--force"], "replace the model file itself"),
])
def test_bad_usage_exits_2(cli, model_file, args, message):
    args = [a.replace("{model}", str(model_file)) for a in args]
    result = cli("export", model_file, *args)
    assert result.exit_code == 2
    assert message in result.output


def test_a_missing_model_file_exits_2(cli, tmp_path):
    result = cli("export", tmp_path / "nope.keras", "--format", "savedmodel")
    assert result.exit_code == 2
    assert "no such model file" in result.output


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_tflite_falls_back_to_a_fixed_size_when_dynamic_fails(model_file, monkeypatch):
    real = export.formats._tflite_bytes

    def no_dynamic(model, size, scratch):
        if size is None:
            raise RuntimeError("dynamic shapes not supported")
        return real(model, size, scratch)

    monkeypatch.setattr(export.formats, "_tflite_bytes", no_dynamic)
    result = export_model(model_file, "tflite")
    assert result.fixed_size == (360, 480)  # the default, already a multiple of the stride 4
    assert any("could not take dynamic height/width" in n and "360x480" in n for n in result.notes)
    interpreter = tf.lite.Interpreter(model_path=str(result.path))
    assert list(interpreter.get_input_details()[0]["shape"]) == [1, 360, 480, 3]


# --- on jax and torch (TensorFlow hidden, as if not installed) -----------------------------------------

from conftest import child_result, run_on_backend  # noqa: E402

# `segcli export` through the CLI in a process on another backend; prints what each call did
OTHER_BACKEND = """
import json, sys
from typer.testing import CliRunner
from segcli.cli import app
model, calls = sys.argv[1], json.loads(sys.argv[2])
runner = CliRunner()
results = []
for args in calls:
    r = runner.invoke(app, ["export", model, *args])
    results.append({"code": r.exit_code, "output": r.output})
print("RESULT" + json.dumps({"calls": results, "tensorflow_imported": "tensorflow" in sys.modules,
                             "backend": __import__("keras").backend.backend()}))
"""


def _export_without_tensorflow(backend_name, model_file, *calls):
    if not backends.installed(backend_name):
        pytest.skip(f"{backend_name} is not installed")
    result = child_result(run_on_backend(backend_name, "-c", OTHER_BACKEND, model_file,
                                         json.dumps([[str(a) for a in c] for c in calls]), cwd=model_file.parent,
                                         timeout=300))
    assert result["backend"] == backend_name and not result["tensorflow_imported"]
    return result["calls"]


def _one_line(call):
    lines = [line for line in call["output"].splitlines() if line.strip()]
    assert call["code"] == 2 and len(lines) == 1, call
    return lines[0]


@needs_onnx
def test_onnx_on_torch_matches_keras_and_savedmodel_and_tflite_name_tensorflow(model_file):
    import onnx
    import onnxruntime as ort

    user = model_file.parent / "user.onnx"  # an ONNX file segcli did not write: kept, --force or not
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph, producer_name="someone"), str(user))
    user_bytes = user.read_bytes()
    first, again, forced, refused, saved, lite = _export_without_tensorflow(
        "torch", model_file, ["--format", "onnx"], ["--format", "onnx"], ["--format", "onnx", "--force"],
        ["--format", "onnx", "--out", user, "--force"], ["--format", "savedmodel"], ["-f", "tflite"])
    assert first["code"] == 0 and "max abs diff" in first["output"], first
    assert "already exists" in _one_line(again) and forced["code"] == 0, (again, forced)  # torch's file: --force
    assert "is not a ONNX export" in _one_line(refused) and user.read_bytes() == user_bytes
    for call, name in ((saved, "SavedModel"), (lite, "TFLite")):
        line = _one_line(call)
        assert name in line and "needs TensorFlow" in line and "pip install 'segcli[tensorflow]'" in line
    assert not (model_file.parent / "model_savedmodel").exists() and not model_file.with_suffix(".tflite").exists()
    out = model_file.with_suffix(".onnx")
    proto = onnx.load(str(out))
    assert proto.producer_name == "pytorch" and [o.name for o in proto.graph.output] == ["logits"]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "height", "width", 3]
    assert json.loads((model_file.parent / "classes.json").read_text()) == default_classes(3).to_dict()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    model = load_model(model_file, precision="float32").model  # on TensorFlow, this process's backend
    for i, (h, w) in enumerate(SIZES):  # other sizes than the export's own check, a batch of 2 included
        x = np.concatenate([_image(h, w, seed=i), _image(h, w, seed=i + 10)]) if i else _image(h, w, seed=i)
        got, ref = session.run(None, {"image": x})[0], _keras(model, x)
        assert got.shape == (len(x), h, w, 3)
        assert np.abs(got - ref).max() < _tolerance(ref)


def test_on_jax_each_format_says_in_one_line_where_to_export_it(model_file):
    saved, lite, onnx_call = _export_without_tensorflow(
        "jax", model_file, ["--format", "savedmodel"], ["--format", "tflite"], ["--format", "onnx", "--opset", "13"])
    for call, name in ((saved, "SavedModel"), (lite, "TFLite")):
        line = _one_line(call)
        assert name in line and "pip install 'segcli[tensorflow]'" in line
    line = _one_line(onnx_call)
    if backends.installed("torch"):
        assert line.endswith(f"export from torch: segcli --backend torch export {model_file} --format onnx --opset 13")
    assert sorted(p.name for p in model_file.parent.iterdir()) == ["model.keras"]


def test_with_tensorflow_installed_another_backend_names_the_command(monkeypatch):
    monkeypatch.setattr(backends, "installed", lambda name: True)
    line = export.backend_problem("savedmodel", "torch", export.Path("runs/my run/best.keras"), out="out dir",
                                  force=True)
    assert line == ("TensorFlow SavedModel needs the TensorFlow backend (this is torch): segcli --backend tensorflow "
                    "export 'runs/my run/best.keras' --format savedmodel --out 'out dir' --force")
    assert export.backend_problem("tflite", "jax", export.Path("m.keras"), size=(32, 48)).endswith(
        "segcli --backend tensorflow export m.keras --format tflite --size 32x48")
    assert export.backend_problem("onnx", "torch", export.Path("m.keras")) is None
    assert export.backend_problem("onnx", "tensorflow", export.Path("m.keras")) is None
    monkeypatch.setattr(backends, "installed", lambda name: name == "jax")
    assert export.backend_problem("onnx", "jax", export.Path("m.keras")).endswith("pip install 'segcli[torch]'")
