"""Parsing a recipe once: defaults < recipe file < flags, every key and value checked, into a typed `Recipe`."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from segcli.choices import parse_switch
from segcli.errors import SegcliError
from segcli.recipe.recipefiles import find_recipe, save
from segcli.recipe.rules import FLAGS, RULES, Invalid, error, flag, from_text, model_encoder, model_options
from segcli.recipe.rules import model_name as checked_model_name
from segcli.recipe.rules import schedule_problem, switch_text, weights_path
from segcli.recipe.spec import SWITCH_KEYS, TABLES, TUNE_TABLE, DataSpec, ModelSpec, TrainSpec
from segcli.tomlfile import read_toml


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
        for table in TABLES:
            spec = getattr(self, table)
            out[table] = {f.name: (switch_text(getattr(spec, f.name)) if (table, f.name) in SWITCH_KEYS
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
            if (table, f.name) in SWITCH_KEYS:
                value = parse_switch(value)
            elif isinstance(value, list):
                value = tuple(value)
            elif isinstance(value, dict):
                value = dict(value)
            values[f.name] = value
        return kind(**values)

    return Recipe(**{table: spec(table, kind) for table, kind in TABLES.items()})


DEFAULTS: dict[str, dict[str, Any]] = Recipe().to_dict()  # the defaults as TOML tables (key order: the fields')


def _check_encoder_training(recipe: dict) -> None:
    """freeze_encoder_epochs and encoder_lr_mult need a pretrained encoder (segcli.models.encoders)."""
    from segcli.models import list_encoders

    for key in ("freeze_encoder_epochs", "encoder_lr_mult"):
        value = recipe["train"][key]
        if value == DEFAULTS["train"][key]:
            continue
        name = recipe["model"]["name"]
        encoder = model_encoder(name, recipe["model"]["options"])
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
            raise error(None if source == FLAGS else source, f"[{table}]", f"must be a table, got {values!r}")
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
                value = from_text(value)
            try:
                if (table, key) == ("model", "name"):
                    value = checked_model_name(value)
                elif (table, key) == ("model", "options") and not isinstance(value, dict):
                    raise Invalid(f"must be a table of the builder's options, got {value!r}")
                elif (table, key) in RULES:
                    value = RULES[table, key](value)
            except Invalid as exc:
                raise error(source, flag(table, key) if source == FLAGS else f"[{table}] {key}", str(exc)) from None
            out[table][key] = value
    model = out.get("model", {})
    if model.get("name") and model.get("options"):
        model["options"] = model_options(model["name"], model["options"], source)
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


def read_recipe_file(path: str | Path) -> dict:
    """A recipe file (a path or a shipped recipe's name), every key and value checked (errors name the file);
    `classes` made relative to it."""
    path = find_recipe(path)
    recipe = _check(read_toml(path), path)
    classes = recipe.get("data", {}).get("classes")
    if classes and not Path(classes).is_absolute():
        recipe["data"]["classes"] = str((path.parent / classes).resolve())
    options = recipe.get("model", {}).get("options") or {}
    if "encoder_weights" in options:
        options["encoder_weights"] = weights_path(options["encoder_weights"], path.parent)
    return recipe


def resolve(recipe_file: str | Path | dict | None = None, overrides: dict | None = None, *,
            source: str | Path | None = None) -> Recipe:
    """Defaults, then the recipe (a file or an already-read dict of tables), then command-line overrides
    (flags win): the typed Recipe. source: the file an already-read dict came from (for the errors).

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
        train = recipe["train"]
        if "epochs" in given.get("train", {}) and "warmup_epochs" not in given.get("train", {}):
            # a shorter run asked for (--epochs, a tune round) ends the recipe's warm-up with it
            train["warmup_epochs"] = min(train["warmup_epochs"], train["epochs"])
        if given.get("model", {}).get("options"):  # flags (--encoder) are named when the model comes from the file
            model_options(recipe["model"]["name"], given["model"]["options"], FLAGS)
    recipe["model"]["options"] = model_options(recipe["model"]["name"], recipe["model"]["options"], None)
    _check_encoder_training(recipe)
    problem = schedule_problem(recipe["train"])
    if problem:
        if source is None and isinstance(recipe_file, (str, Path)):
            source = find_recipe(recipe_file)
        raise SegcliError(f"{source}: {problem}" if source else problem)
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
    return resolve(file_recipe, overrides, source=find_recipe(recipe_file) if recipe_file else None), note


def load_resolved(path: str | Path) -> Recipe:
    """A recipe.toml written into a run folder (complete, so no defaults are mixed in)."""
    return resolve(path)
