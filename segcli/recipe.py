"""Recipes: every training knob in one TOML file, overridable from the command line.

A recipe has three tables. `[model]` names an architecture from the registry and its builder
options, `[data]` the input size and augmentation, `[train]` the optimiser, schedule, loss and
run length. Anything left out takes the defaults below (the fields of ModelSpec, DataSpec and
TrainSpec); an unknown key is an error that lists the valid ones, so a typo never silently trains
something else.

Parsed once: `resolve(file, flags)` checks every value (defaults < recipe file < flags) and returns a
frozen, typed `Recipe`; everything downstream reads `recipe.train.batch_size`, never string keys.
`save` writes it back as a run's recipe.toml, which `load_resolved` reads back equal. Shipped recipes
are package data in segcli/resources/recipes/.
"""

from __future__ import annotations

import copy
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomli_w

from segcli.errors import SegcliError
from segcli.files import write_text

RECIPES_DIR = Path(__file__).resolve().parent / "resources" / "recipes"  # package data: a checkout and a wheel alike
FLAGS = "command line"  # the source of overrides: a key train.batch_size comes from the flag --batch-size
SWITCHES = ("auto", "true", "false")  # cache and jit: auto, or a bool (TOML bools, or these words; on/off too)
_SWITCH_WORDS = {"auto": None, "true": True, "on": True, "yes": True, "1": True,
                 "false": False, "off": False, "no": False, "0": False}


def parse_switch(value) -> bool | None:
    """The one reader of auto | on | off | true | false (any case; yes/no and 1/0 too) and of TOML bools:
    None for auto, else the bool. ValueError for anything else."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _SWITCH_WORDS:
        return _SWITCH_WORDS[value.strip().lower()]
    raise ValueError(f"must be {', '.join(SWITCHES[:-1])} or {SWITCHES[-1]}, got {_shown(value)}")


def _switch_text(value: bool | None):
    """A switch as a recipe file holds it: "auto", true or false."""
    return "auto" if value is None else value


# --- the typed recipe: field defaults are THE defaults ----------------------------------------------------

@dataclass(frozen=True)
class ModelSpec:
    """[model]: an architecture from the registry and its builder's options (checked against its signature)."""

    name: str = "unet"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSpec:
    """[data]: crop size, augmentation, the val split and the classes file."""

    size: tuple[int, int] = (256, 256)           # training crop, height x width
    scale: tuple[float, float] = (0.75, 1.25)    # random scale factor range (ignored when short_side is set)
    short_side: tuple[int, ...] = ()             # random short-side resize range in pixels, e.g. (400, 600)
    center_crop: bool = False                    # crop the centre instead of a random window
    flip: bool = True
    void_as_class: bool = False                  # train the ignore label as an extra class (the tutorial's protocol)
    val_fraction: float = 0.1                    # held out of train when the data has no val split
    eval_short_side: int = 0                     # resize val images' short side first (0: keep the size)
    eval_crop: tuple[int, ...] = ()              # centre-crop val images to this size after the resize
    cache: bool | None = None                    # keep decoded images in memory: None (auto) | True | False
    classes: str = ""                            # classes.json, relative to the recipe file (--classes wins)


@dataclass(frozen=True)
class TrainSpec:
    """[train]: optimiser, schedule, loss, precision, devices, run length."""

    epochs: int = 20
    batch_size: int = 8                          # the global batch (all replicas)
    optimizer: str = "adam"                      # choices: segcli.training.optim.OPTIMIZERS
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"                   # choices: segcli.training.optim.SCHEDULES
    step_epochs: tuple[int, ...] = ()            # schedule=step: epochs after which lr *= step_gamma
    step_gamma: float = 0.1
    warmup_epochs: float = 0.0
    loss: str = "ce"                             # choices: segcli.training.losses.KINDS
    class_weights: str = "none"                  # none | segcli.training.losses.CLASS_WEIGHTINGS | a JSON list file
    label_smoothing: float = 0.0
    precision: str = "auto"                      # auto or one of segcli.precision.PRECISIONS
    distribute: str = "auto"                     # choices: segcli.training.distribute.STRATEGIES
    jit: bool | None = None                      # XLA: None (auto: on with one GPU) | True | False
    steps_per_execution: int = 0                 # 0: automatic
    max_minutes: float = 0.0                     # stop after this much training time (0: no limit)
    seed: int = 0
    freeze_encoder_epochs: int = 0               # a pretrained encoder stays frozen (decoder only) this many epochs
    encoder_lr_mult: float = 1.0                 # a pretrained encoder learns at lr times this (its weight decay too)


_TABLES = {"model": ModelSpec, "data": DataSpec, "train": TrainSpec}
TUNE_TABLE = "tune"  # [tune]: the keys `segcli tune` searches (segcli.tune reads and checks it; training ignores it)
_SWITCH_KEYS = {("data", "cache"), ("train", "jit")}


def _toml_value(value):
    return list(value) if isinstance(value, tuple) else dict(value) if isinstance(value, dict) else value


@dataclass(frozen=True)
class Recipe:
    """A whole recipe, every value checked and typed: `recipe.train.batch_size`, `recipe.model.options`.
    Build one with `resolve` (defaults < recipe file < flags) or `Recipe.from_dict`; `to_dict` gives the
    TOML tables (as recipe.toml and the model file's metadata hold them)."""

    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=TrainSpec)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        out = {}
        for table in _TABLES:
            spec = getattr(self, table)
            out[table] = {f.name: (_switch_text(getattr(spec, f.name)) if (table, f.name) in _SWITCH_KEYS
                                   else _toml_value(getattr(spec, f.name))) for f in fields(spec)}
        return out

    @classmethod
    def from_dict(cls, tables: dict | None) -> Recipe:
        """Defaults, then `tables` (a recipe's tables, all or some, as TOML holds them), every value checked."""
        return resolve(tables or {})

    def save(self, path: str | Path) -> None:
        save(self, path)


def _typed(tables: dict) -> Recipe:
    """A complete, checked dict of tables -> Recipe."""
    def spec(table: str, kind):
        values = {}
        for f in fields(kind):
            value = tables[table][f.name]
            if (table, f.name) in _SWITCH_KEYS:
                value = parse_switch(value)
            elif isinstance(value, list):
                value = tuple(value)
            elif isinstance(value, dict):
                value = dict(value)
            values[f.name] = value
        return kind(**values)

    return Recipe(**{table: spec(table, kind) for table, kind in _TABLES.items()})


DEFAULTS: dict[str, dict[str, Any]] = Recipe().to_dict()  # the defaults as TOML tables (key order: the fields')


def _choices(table: str, key: str) -> tuple | None:
    """The valid values of a key, from the module that owns them (imported only when the key is checked)."""
    if (table, key) == ("train", "loss"):
        from segcli.training.losses import KINDS

        return KINDS
    if (table, key) == ("train", "precision"):
        from segcli.precision import PRECISIONS

        return ("auto", *PRECISIONS)
    if (table, key) == ("train", "optimizer"):
        from segcli.training.optim import OPTIMIZERS

        return OPTIMIZERS
    if (table, key) == ("train", "schedule"):
        from segcli.training.optim import SCHEDULES

        return SCHEDULES
    if (table, key) == ("train", "distribute"):
        from segcli.training.distribute import STRATEGIES

        return STRATEGIES
    return None


# --- values: each rule returns the value (8.0 -> 8 where an integer goes) or raises _Invalid ----------------

class _Invalid(Exception):
    """A value's problem, worded to follow its key or flag: 'must be an integer >= 1, got 2.5'."""


def _integer(value, low: int | None = 0, high: int | None = None) -> int:
    """An integer (8.0 counts as 8) in [low, high]; low None: any integer."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low) or (
            high is not None and value > high):
        rule = f" from {low} to {high}" if high is not None else "" if low is None else f" >= {low}"
        raise _Invalid(f"must be an integer{rule}, got {_shown(value)}")
    return value


def _number(value, low: float | None = 0.0, *, above: bool = False, below: float | None = None) -> float:
    """A finite number >= low (> low when `above`; low None: any) and < below when given."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and (
        low is None or (value > low if above else value >= low)) and (below is None or value < below)
    if not ok:
        rule = ("" if low is None else f" in [{low:g}, {below:g})" if below is not None
                else f" > {low:g}" if above else f" >= {low:g}")
        raise _Invalid(f"must be a number{rule}, got {_shown(value)}")
    return float(value)


def _pair(value, item, what: str, *, empty: bool = False, ordered: bool = False) -> list:
    """[a, b] of `item` values (min <= max when `ordered`); [] too when `empty`."""
    if empty and value == []:
        return []
    try:
        if not isinstance(value, list) or len(value) != 2:
            raise _Invalid("")
        pair = [item(v) for v in value]
    except _Invalid:
        raise _Invalid(f"must be {'[] or ' if empty else ''}{what}, got {_shown(value)}") from None
    if ordered and pair[0] > pair[1]:
        raise _Invalid(f"must be {what} with min <= max, got {_shown(value)}")
    return pair


def _bool(value) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"must be true or false, got {_shown(value)}")
    return value


def _switch(value):
    """auto | true | false (on/off too): a TOML bool, or one of the words (any case; flags give text)."""
    try:
        return _switch_text(parse_switch(value))
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _string(value) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"must be a string, got {_shown(value)}")
    return value


def _epoch_list(value) -> list[int]:
    try:
        epochs = [_integer(v, 1) for v in value] if isinstance(value, list) else None
    except _Invalid:
        epochs = None
    if epochs is None or any(a >= b for a, b in zip(epochs, epochs[1:])):
        raise _Invalid(f"must be a list of increasing integers >= 1, got {_shown(value)}")
    return epochs


def _size(value, *, empty: bool = False) -> list[int]:
    return _pair(value, lambda v: _integer(v, 1), "[height, width] in pixels, two integers >= 1", empty=empty)


RULES = {
    ("data", "size"): _size,
    ("data", "scale"): lambda v: _pair(v, lambda x: _number(x, above=True), "[min, max], two numbers > 0",
                                       ordered=True),
    ("data", "short_side"): lambda v: _pair(v, lambda x: _integer(x, 1), "[min, max] in pixels, two integers >= 1",
                                            empty=True, ordered=True),
    ("data", "center_crop"): _bool,
    ("data", "flip"): _bool,
    ("data", "void_as_class"): _bool,
    ("data", "val_fraction"): lambda v: _number(v, 0.0, below=1.0),
    ("data", "eval_short_side"): lambda v: _integer(v, 0),
    ("data", "eval_crop"): lambda v: _size(v, empty=True),
    ("data", "cache"): _switch,
    ("data", "classes"): _string,
    ("train", "epochs"): lambda v: _integer(_integer(v, 1), 1, 100_000),  # ">= 1" first; the bound is
    # generous (--epochs 1e9 is a slip, not a plan)
    ("train", "batch_size"): lambda v: _integer(v, 1),
    ("train", "lr"): lambda v: _number(v, above=True),
    ("train", "weight_decay"): _number,
    ("train", "step_epochs"): _epoch_list,
    ("train", "step_gamma"): lambda v: _number(v, above=True),
    ("train", "warmup_epochs"): _number,
    ("train", "class_weights"): _string,
    ("train", "label_smoothing"): lambda v: _number(v, 0.0, below=1.0),
    ("train", "jit"): _switch,
    ("train", "steps_per_execution"): lambda v: _integer(v, 0),  # 0: automatic
    ("train", "max_minutes"): _number,  # 0: no limit
    ("train", "seed"): lambda v: _integer(v, 0, 2 ** 32 - 1),  # what NumPy's seeding takes
    ("train", "freeze_encoder_epochs"): lambda v: _integer(v, 0),
    ("train", "encoder_lr_mult"): lambda v: _number(v, above=True),
}


def _shown(value) -> str:
    return repr(value)


def _from_text(text: str):
    """A flag's text as the number it spells ('8' -> 8, '1e-3' -> 0.001, 'nan' -> nan), else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _flag(table: str, key: str) -> str:
    return "MODEL" if (table, key) == ("model", "name") else "--" + key.replace("_", "-")


def _error(source, where: str, problem: str) -> SegcliError:
    """'--epochs: must be ...' for a flag; 'FILE: [train] epochs must be ...' for a file; no path for a dict."""
    if source == FLAGS:
        return SegcliError(f"{where}: {problem}")
    return SegcliError(f"{where} {problem}", source)


def _model_name(value) -> str:
    from segcli.models import list_models

    if not isinstance(value, str) or value not in list_models():
        raise _Invalid(f"must be one of {', '.join(list_models())}, got {_shown(value)}")
    return value


def _model_options(name: str, options: dict, source) -> dict:
    """Option names from the builder's signature; each value of the type of its default (8.0 -> 8 for an int).
    The ranges (depth >= 1, dropout in [0, 1), ...) are the builder's to check."""
    import inspect

    from segcli.models import builder_options, model_entry

    builder = model_entry(name).builder
    valid, params = builder_options(builder), inspect.signature(builder).parameters
    out = {}
    for key, value in options.items():
        try:
            if key not in valid:
                raise _Invalid(f"is not an option of model {name!r}; valid options: {', '.join(valid)}")
            default = params[key].default
            if isinstance(default, bool):
                value = _bool(value)
            elif isinstance(default, int):
                value = _integer(value, None)
            elif isinstance(default, float):
                value = _number(value, None)
            elif isinstance(default, str):
                value = _string(value)
            if key == "encoder":
                value = _encoder_name(value)
            elif key == "encoder_weights":
                value = _encoder_weights(value)
        except _Invalid as exc:  # flags set only the options they name (--encoder, --encoder-weights)
            where = _flag("model", key) if source == FLAGS else f"[model.options] {key}"
            raise _error(source, where, str(exc)) from None
        out[key] = value
    return out


def _encoder_name(value) -> str:
    from segcli.models import list_encoders
    from segcli.models.blocks import ENCODERS

    valid = (*ENCODERS, *list_encoders())
    if value not in valid:
        raise _Invalid(f"must be one of {', '.join(valid)}, got {_shown(value)}")
    return value


WEIGHTS_WORDS = ("none", "imagenet")  # encoder_weights: one of these, or a weights file's path


def _encoder_weights(value) -> str:
    """none | imagenet | a path (kept as text; the builder checks the file); TOML has no None, so "none"."""
    if value is None:
        return "none"
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"must be none, imagenet or a weights file path, got {_shown(value)}")
    word = value.strip().lower()
    return word if word in WEIGHTS_WORDS else value


def weights_path(value: str, base: str | Path | None = None) -> str:
    """encoder_weights with a relative path made absolute: against ``base`` (the recipe file's folder), else
    the working directory; none/imagenet unchanged."""
    if not isinstance(value, str) or value.strip().lower() in WEIGHTS_WORDS:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (Path(base or ".") / path).resolve())


def _model_encoder(name: str, options: dict) -> str:
    """The encoder the model will be built with: its option, else the registry preset, else the builder's default."""
    import inspect

    from segcli.models import model_entry

    entry = model_entry(name)
    if "encoder" in options:
        return options["encoder"]
    if "encoder" in entry.presets:
        return entry.presets["encoder"]
    param = inspect.signature(entry.builder).parameters.get("encoder")
    return None if param is None else param.default


def _check_encoder_training(recipe: dict) -> None:
    """freeze_encoder_epochs and encoder_lr_mult need a pretrained encoder (segcli.models.encoders)."""
    from segcli.models import list_encoders

    for key in ("freeze_encoder_epochs", "encoder_lr_mult"):
        value = recipe["train"][key]
        if value == DEFAULTS["train"][key]:
            continue
        name = recipe["model"]["name"]
        encoder = _model_encoder(name, recipe["model"]["options"])
        if encoder not in list_encoders():
            raise SegcliError(f"{key} = {value:g} needs a pretrained encoder, and model {name!r} has "
                              f"encoder {encoder!r}; set [model.options] encoder (--encoder) to one of "
                              f"{', '.join(list_encoders())}")


def _check(recipe: dict, source) -> dict:
    """The recipe with every key and value checked (8.0 becomes 8 where an integer goes). source: the recipe
    file, FLAGS (overrides: the message names the flag), or None (a dict from code)."""
    out = {}
    for table, values in recipe.items():
        if table not in DEFAULTS and (table != TUNE_TABLE or source == FLAGS):
            raise SegcliError(f"unknown table [{table}]; valid tables: {', '.join(DEFAULTS)}, {TUNE_TABLE}", source)
        if not isinstance(values, dict):
            raise _error(None if source == FLAGS else source, f"[{table}]", f"must be a table, got {_shown(values)}")
        if table == TUNE_TABLE:  # kept as written: segcli.tune checks it, training ignores it
            out[table] = copy.deepcopy(values)
            continue
        out[table] = {}
        for key, value in values.items():
            if key not in DEFAULTS[table]:
                raise SegcliError(
                    f"unknown key '{key}' in [{table}]; valid keys: {', '.join(DEFAULTS[table])}", source)
            default = DEFAULTS[table][key]
            if source == FLAGS and isinstance(value, str) and isinstance(default, (int, float)) \
                    and not isinstance(default, bool):
                value = _from_text(value)
            try:
                choices = _choices(table, key)
                if choices and value not in choices:
                    raise _Invalid(f"must be one of {', '.join(choices)}, got {_shown(value)}")
                if (table, key) == ("model", "name"):
                    value = _model_name(value)
                elif (table, key) == ("model", "options") and not isinstance(value, dict):
                    raise _Invalid(f"must be a table of the builder's options, got {_shown(value)}")
                elif (table, key) in RULES:
                    value = RULES[table, key](value)
            except _Invalid as exc:
                raise _error(source, _flag(table, key) if source == FLAGS else f"[{table}] {key}", str(exc)) from None
            out[table][key] = value
    model = out.get("model", {})
    if model.get("name") and model.get("options"):
        model["options"] = _model_options(model["name"], model["options"], source)
    return out


def merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for table, values in override.items():
        out.setdefault(table, {})
        for key, value in values.items():
            if key == "options" and isinstance(value, dict):
                out[table].setdefault("options", {}).update(value)
            else:
                out[table][key] = value
    return out


def find_recipe(name_or_path: str | Path) -> Path:
    """A path, or the name of a shipped recipe (`camvid-unet` finds RECIPES_DIR/camvid-unet.toml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = RECIPES_DIR / f"{Path(str(name_or_path)).stem}.toml"
    if not path.suffix and shipped.is_file():
        return shipped
    available = sorted(p.stem for p in RECIPES_DIR.glob("*.toml")) if RECIPES_DIR.is_dir() else []
    hint = f" (shipped recipes: {', '.join(available)})" if available else ""
    raise SegcliError(f"no such recipe file{hint}", path)


def read_recipe_file(path: str | Path) -> dict:
    """A recipe file, every key and value checked (errors name the file); `classes` made relative to it."""
    path = find_recipe(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SegcliError(f"not valid TOML: {exc}", path) from None
    except OSError as exc:
        raise SegcliError(f"cannot read: {exc.strerror or exc}", path) from None
    recipe = _check(raw, path)
    classes = recipe.get("data", {}).get("classes")
    if classes and not Path(classes).is_absolute():
        recipe["data"]["classes"] = str((path.parent / classes).resolve())
    options = recipe.get("model", {}).get("options") or {}
    if "encoder_weights" in options:
        options["encoder_weights"] = weights_path(options["encoder_weights"], path.parent)
    return recipe


def resolve(recipe_file: str | Path | dict | None = None, overrides: dict | None = None) -> Recipe:
    """Defaults, then the recipe (a file or an already-read dict of tables), then command-line overrides
    (flags win): the typed Recipe.

    Every value is checked here, before anything is built or written: a bad one is a SegcliError naming the
    file and key, or for an override the flag it came from (train.batch_size: --batch-size, model.name: MODEL).
    Overrides may be the flags' text ("8", "1e-3"); None means "flag not given"."""
    recipe = copy.deepcopy(DEFAULTS)
    if isinstance(recipe_file, dict):
        recipe = merge(recipe, _check(recipe_file, None))
    elif recipe_file is not None:
        recipe = merge(recipe, read_recipe_file(recipe_file))
    if overrides:
        given = _check({t: {k: v for k, v in kv.items() if v is not None} for t, kv in overrides.items()}, FLAGS)
        recipe = merge(recipe, given)
        if given.get("model", {}).get("options"):  # flags (--encoder) are named when the model comes from the file
            _model_options(recipe["model"]["name"], given["model"]["options"], FLAGS)
    recipe["model"]["options"] = _model_options(recipe["model"]["name"], recipe["model"]["options"], None)
    _check_encoder_training(recipe)
    return _typed(recipe)


def resolve_for_model(model_name: str | None, recipe_file=None, overrides: dict | None = None
                      ) -> tuple[Recipe, str | None]:
    """(recipe, note) for `train MODEL --recipe FILE FLAGS`: defaults < recipe file < flags, where MODEL
    replaces the recipe's model and drops its options when they differ (the note says so; None otherwise)."""
    file_recipe = read_recipe_file(recipe_file) if recipe_file else {}
    file_model = file_recipe.get("model", {}).get("name")
    note = None
    if model_name and file_model not in (None, model_name):
        note = (f"the recipe's model '{file_model}' is replaced by '{model_name}' (its model options are not used)")
        file_recipe["model"] = {"options": {}}
    overrides = {k: dict(v) for k, v in (overrides or {}).items()}
    if model_name:
        overrides.setdefault("model", {})["name"] = model_name
    return resolve(file_recipe, overrides), note


def save(recipe: Recipe, path: str | Path) -> None:
    """recipe.toml of a run folder: complete, so reading it back (load_resolved) gives an equal Recipe."""
    write_text(path, "# resolved by segcli: defaults < recipe file < command-line flags\n"
               + tomli_w.dumps(recipe.to_dict()))


def load_resolved(path: str | Path) -> Recipe:
    """A recipe.toml written into a run folder (complete, so no defaults are mixed in)."""
    return resolve(path)


def held_out(saved: dict | None) -> tuple[float, int]:
    """(val_fraction, seed) of the split a model was trained with, from the recipe tables its model file
    stores (segcli.modelfile meta "recipe"), else the defaults: what `evaluate` uses to find that val split."""
    data, train = (saved or {}).get("data") or {}, (saved or {}).get("train") or {}
    return float(data.get("val_fraction", DataSpec.val_fraction)), int(train.get("seed", TrainSpec.seed))
