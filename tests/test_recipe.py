"""Every numeric flag and recipe value is checked once (segcli.recipe), before anything is built or written:
a bad one is exit 2 with one line naming the flag, or the recipe file and key, and no run folder appears."""

from pathlib import Path

import pytest

from segcli import recipe as recipes
from segcli.errors import SegcliError


def assert_one_line_error(result, *needles, out=None):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    if out is not None:
        assert not out.exists()


BAD_FLAGS = [  # (flag, value, what the line says after "FLAG: ")
    ("--epochs", "0", "must be an integer >= 1, got 0"),
    ("--epochs", "-1", "must be an integer >= 1, got -1"),
    ("--epochs", "2.5", "must be an integer >= 1, got 2.5"),
    ("--epochs", "ten", "must be an integer >= 1, got 'ten'"),
    ("--epochs", "1e9", "must be an integer from 1 to 100000, got 1000000000"),  # an absurd count is a slip
    ("--batch-size", "0", "must be an integer >= 1, got 0"),
    ("--batch-size", "2.5", "must be an integer >= 1, got 2.5"),
    ("--lr", "nan", "must be a number > 0 and <= 10, got nan"),
    ("--lr", "inf", "must be a number > 0 and <= 10, got inf"),
    ("--lr", "-1", "must be a number > 0 and <= 10, got -1"),
    ("--lr", "0", "must be a number > 0 and <= 10, got 0"),
    ("--max-minutes", "-1", "must be a number >= 0, got -1"),
    ("--max-minutes", "nan", "must be a number >= 0, got nan"),
    ("--seed", "-1", "must be an integer from 0 to 4294967295, got -1"),
    ("--seed", "1.5", "must be an integer from 0 to 4294967295, got 1.5"),
    ("--size", "0x64", "expected HEIGHTxWIDTH"),
    ("--size", "64", "expected HEIGHTxWIDTH"),
    ("--jit", "maybe", "must be auto, true or false, got 'maybe'"),
    ("--precision", "fp8", "must be one of auto, float32, mixed_float16, mixed_bfloat16, got 'fp8'"),
    ("--distribute", "many", "must be one of auto, none, mirrored, multi, got 'many'"),
]


@pytest.mark.parametrize("flag,value,problem", BAD_FLAGS, ids=[f"{f}={v}" for f, v, _ in BAD_FLAGS])
def test_bad_flag_is_one_line_naming_the_flag(cli, sample_data, tmp_path, flag, value, problem):
    out = tmp_path / "run"
    result = cli("train", "unet", sample_data, flag, value, "--out", out)
    assert_one_line_error(result, f"{flag}: ", problem, out=out)


def test_unknown_model_argument_is_named(cli, sample_data, tmp_path):
    out = tmp_path / "run"
    result = cli("train", "unet3d", sample_data, "--out", out)
    assert_one_line_error(result, "MODEL: must be one of", "unet", "got 'unet3d'", out=out)


BAD_VALUES = [  # (recipe text, the "[table] key" the line names, the problem)
    ("[train]\nbatch_size = 2.5", "[train] batch_size", "must be an integer >= 1, got 2.5"),
    ("[train]\nbatch_size = 0", "[train] batch_size", "must be an integer >= 1, got 0"),
    ("[train]\nepochs = 0", "[train] epochs", "must be an integer >= 1, got 0"),
    ("[train]\nepochs = '10'", "[train] epochs", "must be an integer >= 1, got '10'"),
    ("[train]\nepochs = true", "[train] epochs", "must be an integer >= 1, got True"),
    ("[train]\nepochs = 200000", "[train] epochs", "must be an integer from 1 to 100000, got 200000"),
    ("[train]\nlr = nan", "[train] lr", "must be a number > 0 and <= 10, got nan"),
    ("[train]\nlr = -0.1", "[train] lr", "must be a number > 0"),
    ("[train]\nlr = '1e-3'", "[train] lr", "must be a number > 0 and <= 10, got '1e-3'"),
    ("[train]\nweight_decay = -1e-4", "[train] weight_decay", "must be a number >= 0"),
    ("[train]\nstep_gamma = 0", "[train] step_gamma", "must be a number > 0"),
    ("[train]\nstep_epochs = [5, 3]", "[train] step_epochs", "must be a list of increasing integers >= 1, got [5, 3]"),
    ("[train]\nwarmup_epochs = -1", "[train] warmup_epochs", "must be a number >= 0"),
    ("[train]\nwarmup_epochs = 1e9", "[train] warmup_epochs",
     "must be a number >= 0 and <= 100000, got 1000000000.0"),  # trained at almost zero lr
    ("[train]\nstep_gamma = 2", "[train] step_gamma", "must be a number > 0 and <= 1, got 2"),
    ("[train]\nweight_decay = 5", "[train] weight_decay", "must be a number >= 0 and <= 1, got 5"),
    ("[train]\nweight_decay = inf", "[train] weight_decay", "must be a number >= 0 and <= 1, got inf"),
    ("[train]\nstep_epochs = [5, 200000]", "[train] step_epochs",
     "must be a list of increasing integers from 1 to 100000, got [5, 200000]"),
    ("[train]\nfreeze_encoder_epochs = 1e9", "[train] freeze_encoder_epochs",
     "must be an integer from 0 to 100000, got 1000000000"),
    ("[train]\nencoder_lr_mult = inf", "[train] encoder_lr_mult", "must be a number > 0 and <= 100, got inf"),
    ("[train]\nlr = inf", "[train] lr", "must be a number > 0 and <= 10, got inf"),
    ("[train]\nlabel_smoothing = 1.0", "[train] label_smoothing", "must be a number in [0, 1), got 1.0"),
    ("[train]\nmax_minutes = -5", "[train] max_minutes", "must be a number >= 0"),
    ("[train]\nseed = 1.5", "[train] seed", "must be an integer from 0 to 4294967295, got 1.5"),
    ("[train]\nsteps_per_execution = -1", "[train] steps_per_execution", "must be an integer >= 0"),
    ("[train]\nencoder_lr_mult = 0", "[train] encoder_lr_mult", "must be a number > 0 and <= 100, got 0"),
    ("[train]\nencoder_lr_mult = 'low'", "[train] encoder_lr_mult", "must be a number > 0 and <= 100, got 'low'"),
    ("[train]\njit = 'yes please'", "[train] jit", "must be auto, true or false"),
    ("[train]\noptimizer = 'rmsprop'", "[train] optimizer", "must be one of adam, adamw, sgd, got 'rmsprop'"),
    ("[train]\nloss = 'bce'", "[train] loss", "must be one of ce, focal, dice, ce+dice, ohem, got 'bce'"),
    ("[train]\nclass_weights = 3", "[train] class_weights", "must be a string, got 3"),
    ("[data]\nsize = [64]", "[data] size", "must be [height, width] in pixels, two integers >= 1, got [64]"),
    ("[data]\nsize = [0, 64]", "[data] size", "must be [height, width] in pixels, two integers >= 1, got [0, 64]"),
    ("[data]\nsize = [64.5, 64]", "[data] size",
     "must be [height, width] in pixels, two integers >= 1, got [64.5, 64]"),
    ("[data]\nsize = '64x64'", "[data] size", "must be [height, width] in pixels, two integers >= 1, got '64x64'"),
    ("[data]\nscale = [1.2, 0.8]", "[data] scale",
     "must be [min, max], two numbers > 0 with min <= max, got [1.2, 0.8]"),
    ("[data]\nscale = [0, 1]", "[data] scale", "must be [min, max], two numbers > 0, got [0, 1]"),
    ("[data]\nshort_side = [600, 400]", "[data] short_side",
     "must be [min, max] in pixels, two integers >= 1 with min <= max, got [600, 400]"),
    ("[data]\neval_crop = [64]", "[data] eval_crop", "must be [] or [height, width]"),
    ("[data]\neval_short_side = -1", "[data] eval_short_side", "must be an integer >= 0"),
    ("[data]\nval_fraction = 1.0", "[data] val_fraction", "must be a number in [0, 1), got 1.0"),
    ("[data]\nflip = 'true'", "[data] flip", "must be true or false, got 'true'"),
    ("[data]\nvoid_as_class = 1", "[data] void_as_class", "must be true or false, got 1"),
    ("[data]\ncache = 'sometimes'", "[data] cache", "must be auto, true or false"),
    ("[model]\nname = 'vgg'", "[model] name", "must be one of fcn, "),
    ("[model]\noptions = 3", "[model] options", "must be a table"),
    ("[model]\nname = 'unet'\n[model.options]\ndepth = 2.5", "[model.options] depth", "must be an integer, got 2.5"),
    ("[model]\nname = 'unet'\n[model.options]\ndepth = '2'", "[model.options] depth", "must be an integer, got '2'"),
    ("[model]\nname = 'unet'\n[model.options]\nbatch_norm = 'yes'", "[model.options] batch_norm",
     "must be true or false"),
    ("[model]\nname = 'unet'\n[model.options]\ndeep = 2", "[model.options] deep",
     "is not an option of model 'unet'; valid options: depth"),
    ("train = 3", "[train]", "must be a table, got 3"),
]


@pytest.mark.parametrize("text,where,problem", BAD_VALUES, ids=[t.replace("\n", " ") for t, _, _ in BAD_VALUES])
def test_bad_recipe_value_is_one_line_naming_file_and_key(cli, sample_data, tmp_path, text, where, problem):
    recipe, out = tmp_path / "bad.toml", tmp_path / "run"
    recipe.write_text(text + "\n")
    result = cli("train", "unet", sample_data, "--recipe", recipe, "--out", out)
    assert_one_line_error(result, f"{recipe}: {where} {problem}", out=out)


def test_integral_floats_count_as_integers_and_flags_arrive_as_text(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("[train]\nbatch_size = 8.0\nepochs = 3\nlr = 1\n[data]\nsize = [64.0, 96]\n")
    r = recipes.resolve(recipe, {"train": {"epochs": "5", "lr": "1e-3", "seed": None}})
    assert r.train.batch_size == 8 and type(r.train.batch_size) is int
    assert list(r.data.size) == [64, 96] and all(type(s) is int for s in r.data.size)
    assert r.train.epochs == 5 and r.train.lr == pytest.approx(1e-3) and r.train.seed == 0
    with pytest.raises(SegcliError, match=r"^--batch-size: must be an integer >= 1, got 2.5$"):
        recipes.resolve(None, {"train": {"batch_size": "2.5"}})


def test_options_without_a_model_name_are_checked_against_the_model_used(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("[model.options]\nvariant = 'fcn16s'\n")  # an fcn option, no [model] name
    assert recipes.resolve(recipe, {"model": {"name": "fcn"}}).model.options == {"variant": "fcn16s"}
    with pytest.raises(SegcliError, match="variant is not an option of model 'unet'"):
        recipes.resolve(recipe)


def test_train_passes_only_the_flags_given(cli, sample_data, tmp_path, monkeypatch):
    """The library sees which flags were set (what --resume refuses): none given is {}, no None values."""
    import segcli.runs

    seen = []

    def fake_train(model, data_dir, **kwargs):
        seen.append(kwargs["overrides"])
        raise SegcliError("stop here")

    monkeypatch.setattr(segcli.runs, "train_and_evaluate", fake_train)
    cli("train", "unet", sample_data, "--out", tmp_path / "a")
    cli("train", "unet", sample_data, "--epochs", "3", "--size", "64x96", "--jit", "false", "--out", tmp_path / "b")
    cli("train", "--resume", tmp_path / "a", "--lr", "0.01")
    assert seen == [{}, {"data": {"size": [64, 96]}, "train": {"epochs": "3", "jit": "false"}},
                    {"train": {"lr": "0.01"}}]


@pytest.mark.parametrize("args,needle", [
    (["--epochs", "0"], "--epochs: must be an integer >= 1, got 0"),
    (["--batch-size", "2.5"], "--batch-size: must be an integer >= 1, got 2.5"),
    (["--size", "64"], "--size: expected HEIGHTxWIDTH"),
    (["--precision", "fp8"], "--precision: must be one of auto"),
])
def test_compare_checks_flags_before_training(cli, tmp_path, args, needle):
    out = tmp_path / "cmp"
    result = cli("compare", "unet", "fcn", *args, "--out", out)
    assert_one_line_error(result, needle, out=out)


def test_compare_checks_models_and_recipes_before_training(cli, tmp_path):
    out, recipe = tmp_path / "cmp", tmp_path / "bad.toml"
    assert_one_line_error(cli("compare", "unet", "unet3d", "--out", out), "MODEL: must be one of", "got 'unet3d'",
                          out=out)
    recipe.write_text("[train]\nlr = -1\n")
    assert_one_line_error(cli("compare", "unet", "fcn", "--recipe", recipe, "--out", out),
                          f"{recipe}: [train] lr must be a number > 0 and <= 10, got -1", out=out)


def test_typed_recipe_round_trips_through_recipe_toml(tmp_path):
    """resolve gives frozen, typed fields; recipe.toml written and read back is an equal Recipe."""
    import dataclasses

    r = recipes.resolve("camvid-fcn", {"train": {"jit": "on", "epochs": "3"}, "data": {"size": [64, 96]}})
    assert isinstance(r, recipes.Recipe) and r.train.jit is True and r.data.cache is None
    assert r.train.epochs == 3 and r.data.size == (64, 96) and r.model.name == "fcn"
    assert r.data.classes.endswith("camvid-classes.json") and Path(r.data.classes).is_file()
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.train.epochs = 4
    recipes.save(r, tmp_path / "recipe.toml")
    assert recipes.load_resolved(tmp_path / "recipe.toml") == r
    assert recipes.Recipe.from_dict(r.to_dict()) == r
    assert recipes.Recipe().to_dict() == recipes.DEFAULTS and recipes.resolve() == recipes.Recipe()


@pytest.mark.parametrize("text,value", [("auto", None), ("AUTO", None), ("on", True), ("true", True), ("True", True),
                                        ("off", False), ("false", False), (True, True), (False, False)])
def test_one_switch_parser_for_recipe_train_and_bench(text, value):
    from segcli.bench import parse_jit
    from segcli.training.distribute import execution_settings

    assert recipes.parse_switch(text) is value
    assert recipes.resolve(None, {"train": {"jit": text}, "data": {"cache": text}}).train.jit is value
    assert parse_jit(text) is value
    jit, _ = execution_settings(text, 0, gpu=True, distributed=False)
    assert jit is (True if value is None else value)  # auto: on with a GPU


def test_shipped_recipes_are_package_data():
    """Found inside the package (what a wheel installs), by name or by path."""
    import segcli

    package = Path(segcli.__file__).resolve().parent
    assert recipes.RECIPES_DIR == package / "resources" / "recipes"
    for name in ("sample-unet", "camvid-fcn", "camvid-unet", "lambda-fcn", "lambda-unet"):
        assert recipes.find_recipe(name) == recipes.RECIPES_DIR / f"{name}.toml"
    assert (recipes.RECIPES_DIR / "camvid-classes.json").is_file()
    toml = (package.parent / "pyproject.toml").read_text()
    assert '"resources/recipes/*.toml"' in toml and '"resources/recipes/*.json"' in toml


def test_warmup_longer_than_the_run_is_refused(cli, sample_data, tmp_path):
    """warmup_epochs is checked against epochs once the recipe and flags are merged. A shorter run asked for
    with --epochs (or a tune round's epochs) ends the recipe's warm-up with it, so `--recipe camvid-fcn --epochs 1`
    still trains; a warm-up the recipe or the flags themselves make longer than the run is refused."""
    recipe, out = tmp_path / "warm.toml", tmp_path / "run"
    recipe.write_text("[train]\nepochs = 1\nwarmup_epochs = 5.0\n")
    result = cli("train", "unet", sample_data, "--recipe", recipe, "--out", out)
    assert_one_line_error(result, "[train] warmup_epochs = 5 must be <= epochs (1)", "warm.toml", out=out)
    with pytest.raises(SegcliError, match=r"warmup_epochs = 30 must be <= epochs \(20\)"):
        recipes.resolve({"train": {"warmup_epochs": 30}})
    with pytest.raises(SegcliError, match=r"warmup_epochs = 5 must be <= epochs \(2\)"):
        recipes.resolve(None, {"train": {"epochs": 2, "warmup_epochs": 5}})
    shortened = recipes.resolve("camvid-fcn", {"train": {"epochs": "1"}}).train
    assert (shortened.epochs, shortened.warmup_epochs) == (1, 1.0)  # the recipe's 2-epoch warm-up ends with the run
    assert recipes.resolve("camvid-fcn", {"train": {"epochs": 3}}).train.warmup_epochs == 2.0  # unchanged
    assert recipes.resolve({"train": {"epochs": 2, "warmup_epochs": 2}}).train.warmup_epochs == 2.0
