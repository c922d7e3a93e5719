"""segcli tune: KerasTuner searches over a recipe's [tune] table, each trial a run folder (tiny data and models)."""

import json
import sys
import tomllib

import pytest
from conftest import tiny_recipe_text

BASE = tiny_recipe_text(epochs=1, precision=None, lr=None)

TUNE = """
[tune]
lr = {min = 1e-3, max = 1e-2, log = true}
loss = ["ce", "ce+dice"]
"""


def _recipe(tmp_path, tune=TUNE):
    path = tmp_path / "search.toml"
    path.write_text(BASE + tune)
    return path


def _one_line_error(result, *parts):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output
    for part in parts:
        assert part in lines[0], lines[0]


@pytest.mark.slow
def test_random_search_writes_its_files_and_the_best_recipe_trains(cli, sample_data, tmp_path):
    out = tmp_path / "tune"
    result = cli("tune", "unet", sample_data, "--recipe", _recipe(tmp_path), "--trials", 3, "--out", out)
    assert result.exit_code == 0, result.output
    for name in ("tune.md", "tune.json", "tune.png", "best-recipe.toml"):
        assert (out / name).is_file(), name
    report = json.loads((out / "tune.json").read_text())
    rows = report["rows"]
    assert [r["trial"] for r in rows] == ["trial-000", "trial-001", "trial-002"]
    assert all(r["status"] == "completed" and r["val_miou"] is not None for r in rows)
    assert len({(r["knobs"]["lr"], r["knobs"]["loss"]) for r in rows}) == 3  # no configuration twice
    assert all(1e-3 <= r["knobs"]["lr"] <= 1e-2 and r["knobs"]["loss"] in ("ce", "ce+dice") for r in rows)
    for r in rows:  # each trial is a finished segcli run folder, trained with its knobs
        trained = tomllib.loads((out / r["trial"] / "recipe.toml").read_text())["train"]
        assert (trained["lr"], trained["loss"]) == (pytest.approx(r["knobs"]["lr"]), r["knobs"]["loss"])
        # the score is the trial's own evaluation of its best.keras on val, as its metrics.json has it
        evaluation = json.loads((out / r["trial"] / "metrics.json").read_text())["evaluation"]
        assert (r["val_miou"], r["pixel_accuracy"]) == pytest.approx((evaluation["miou"], evaluation["pixel_accuracy"]))
    best = report["best"]
    assert best["val_miou"] == max(r["val_miou"] for r in rows)
    assert "trial-002" in result.stdout and "best: " + best["trial"] in result.stdout
    assert best["trial"] in (out / "tune.md").read_text()

    run = tmp_path / "best-run"
    trained = cli("train", "unet", sample_data, "--recipe", out / "best-recipe.toml", "--out", run)
    assert trained.exit_code == 0, trained.output
    recipe = tomllib.loads((run / "recipe.toml").read_text())
    assert recipe["train"]["lr"] == pytest.approx(best["knobs"]["lr"])
    assert recipe["train"]["loss"] == best["knobs"]["loss"]
    assert recipe["train"]["max_minutes"] == 0  # the search's per-trial limit is not carried over
    assert recipe["model"]["options"]["base_filters"] == 4


@pytest.mark.slow
def test_ctrl_c_ends_the_search_and_resume_does_not_repeat_a_finished_trial(cli, sample_data, tmp_path, monkeypatch):
    import segcli.runs

    out = tmp_path / "tune"
    first = cli("tune", "unet", sample_data, "--recipe", _recipe(tmp_path), "--trials", 1, "--out", out)
    assert first.exit_code == 0, first.output
    done = json.loads((out / "tune.json").read_text())["rows"]
    started = json.loads((out / "trial-000" / "run.json").read_text())["started"]

    def ctrl_c(*args, **kwargs):  # Ctrl-C as the next trial starts training
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(segcli.runs, "train_and_evaluate", ctrl_c)
        stopped = cli("tune", "--resume", out, "--trials", 2)
    assert stopped.exit_code == 130, stopped.output
    assert f"segcli tune --resume {out}" in stopped.stderr
    assert len(json.loads((out / "tune.json").read_text())["rows"]) == 2  # trial-001 started, not finished

    resumed = cli("tune", "--resume", out, "--trials", 2)
    assert resumed.exit_code == 0, resumed.output
    rows = json.loads((out / "tune.json").read_text())["rows"]
    assert [r["trial"] for r in rows] == ["trial-000", "trial-001"]
    assert all(r["status"] == "completed" for r in rows)
    assert rows[0]["knobs"] == done[0]["knobs"] and rows[0]["val_miou"] == done[0]["val_miou"]
    assert json.loads((out / "trial-000" / "run.json").read_text())["started"] == started  # not trained again
    assert rows[1]["knobs"] != rows[0]["knobs"]


@pytest.mark.parametrize("tune, parts", [
    ('lrr = [0.1]', ["[tune] lrr", "not a [train] or [data] key"]),
    ('base_filters = [4, 8]', ["[tune] base_filters", "model.options.base_filters"]),
    ('"model.options.nope" = [1, 2]', ["[tune] model.options.nope", "not an option of model 'unet'"]),
    ('model.options.nope = [1, 2]', ["[tune] model.options.nope"]),  # a TOML dotted key: the same name
    ('lr = {min = 1e-2, max = 1e-3}', ["[tune] lr", "min < max"]),
    ('lr = {min = 0.0, max = 1e-3, log = true}', ["[tune] lr", "log range needs min > 0"]),
    ('lr = {min = 1e-4, max = 1e-3, scale = 2}', ["[tune] lr", "unknown range key 'scale'"]),
    ('lr = {min = -1.0, max = 1e-3}', ["[tune] lr", "[train] lr must be a number > 0"]),
    ('batch_size = {min = 2.5, max = 8}', ["[tune] batch_size", "integers"]),
    ('loss = ["ce", "nope"]', ["[tune] loss", "must be one of"]),
    ('loss = {min = 1, max = 2}', ["[tune] loss", "numeric key"]),
    ('batch_size = []', ["[tune] batch_size", "empty"]),
    ('lr = 0.1', ["[tune] lr", "list of choices or a range"]),
    ('max_minutes = [1, 2]', ["[tune] max_minutes", "--max-minutes"]),
    ('"model.name" = ["unet", "fcn"]', ["[tune] model.name", "not searchable"]),
])
def test_a_bad_tune_table_is_one_line_naming_the_file_and_key(cli, sample_data, tmp_path, tune, parts):
    recipe = _recipe(tmp_path, "[tune]\n" + tune + "\n")
    out = tmp_path / "tune"
    result = cli("tune", "unet", sample_data, "--recipe", recipe, "--out", out)
    _one_line_error(result, str(recipe), *parts)
    assert not out.exists()  # checked before anything is written or trained


def test_no_tune_table_and_bad_flags_are_one_line(cli, sample_data, tmp_path):
    plain = tmp_path / "plain.toml"
    plain.write_text(BASE)
    _one_line_error(cli("tune", "unet", sample_data, "--recipe", plain, "--out", tmp_path / "a"), str(plain),
                    "no [tune] table")
    recipe = _recipe(tmp_path)
    _one_line_error(cli("tune", "unet", sample_data, "--recipe", recipe, "--out", tmp_path / "b", "--algorithm",
                        "grid"), "--algorithm", "random, bayesian, hyperband")
    _one_line_error(cli("tune", "unet", sample_data, "--recipe", recipe, "--out", tmp_path / "c", "--trials", "0"),
                    "--trials")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    _one_line_error(cli("tune", "unet", sample_data, "--recipe", recipe, "--out", mine, "--force"), str(mine),
                    "not made by segcli")
    assert (mine / "notes.txt").read_text() == "keep me"


def test_a_recipe_with_a_tune_table_still_trains_as_before(tmp_path):
    from segcli import recipe as recipes

    plain = tmp_path / "plain.toml"
    plain.write_text(BASE)
    assert recipes.resolve(_recipe(tmp_path)) == recipes.resolve(plain)


def test_missing_keras_tuner_says_how_to_install_it(cli, sample_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_tuner", None)  # `import keras_tuner` raises ImportError
    result = cli("tune", "unet", sample_data, "--recipe", _recipe(tmp_path), "--out", tmp_path / "tune")
    _one_line_error(result, 'pip install "segcli[tune]"')
    assert not (tmp_path / "tune").exists()


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["random", "bayesian", "hyperband"])
def test_each_algorithm_drives_the_trials_through_keras_tuner(cli, sample_data, tmp_path, monkeypatch, algorithm):
    """The oracles' side, with the training replaced by a stand-in (each trial's recipe saved, a score from lr)."""
    import types

    import segcli.runs
    from segcli import recipe as recipes

    calls = []

    def fake_train(model, data_dir, *, recipe_file, overrides, out, **kwargs):
        recipe, _ = recipes.resolve_for_model(model, recipe_file, overrides)  # the same checks as a real trial
        out.mkdir(parents=True)
        recipe.save(out / "recipe.toml")
        calls.append(recipe)
        return types.SimpleNamespace(metrics={"evaluation": {"miou": recipe.train.lr, "pixel_accuracy": 0.5},
                                              "epochs": recipe.train.epochs})

    monkeypatch.setattr(segcli.runs, "train_and_evaluate", fake_train)
    recipe = tmp_path / "r.toml"
    recipe.write_text(BASE.replace("epochs = 1", "epochs = 9") + TUNE)
    out = tmp_path / "tune"
    result = cli("tune", "unet", sample_data, "--recipe", recipe, "--trials", 4, "--algorithm", algorithm,
                 "--max-minutes", 30, "--out", out)
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "tune.json").read_text())["rows"]
    assert len(rows) == len(calls) == 4
    assert [r["knobs"]["lr"] for r in rows] == pytest.approx([c.train.lr for c in calls])
    assert [r["val_miou"] for r in rows] == pytest.approx([c.train.lr for c in calls])  # the stand-in's score
    assert calls[0].train.max_minutes == pytest.approx(30 / 4, rel=1e-2)  # the budget shared by the trials left
    assert all(0 < c.train.max_minutes <= 30 for c in calls)
    if algorithm == "hyperband":  # Hyperband gives the first trials few epochs
        assert all(1 <= c.train.epochs <= 9 for c in calls) and min(c.train.epochs for c in calls) < 9
    else:
        assert all(c.train.epochs == 9 for c in calls)
    best = max(calls, key=lambda c: c.train.lr)
    assert tomllib.loads((out / "best-recipe.toml").read_text())["train"]["lr"] == pytest.approx(best.train.lr)
