"""[tune]: the knobs a search explores and their spaces, each checked as the same recipe key would be.

A recipe's `[tune]` table names the knobs and their search spaces (checked here, before any training):

    [tune]
    lr = {min = 3e-4, max = 1e-2, log = true}     # a range: min, max, and optionally log = true, step
    batch_size = [4, 8, 16]                       # a choice list: numbers, strings or true/false
    loss = ["ce", "ce+dice"]
    "model.options.base_filters" = [16, 24, 32]   # a dotted name, quoted (a TOML dotted key means the same)

A bare name is a key of [train], else of [data]; `train.KEY` and `data.KEY` name the table; `model.options.NAME`
is an option of the model's builder. Every value is checked as the same key in a recipe would be. The
algorithm matters to one check (hyperband chooses each trial's epochs), so the algorithms are named here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from segcli import recipe as recipes
from segcli.errors import SegcliError
from segcli.recipe import Recipe

ALGORITHMS = ("random", "bayesian", "hyperband")
DEFAULT_ALGORITHM = "random"
RANGE_KEYS = ("min", "max", "log", "step")
_NESTS = ("train", "data", "model", "model.options")  # where a TOML dotted key in [tune] may nest
_NOT_TUNED = {("train", "max_minutes"): "is set for each trial from --max-minutes",
              ("model", "name"): "is the MODEL argument; tune one model at a time",
              ("model", "options"): "is a table; name one option as model.options.NAME"}


@dataclass(frozen=True)
class Knob:
    """One searched key: its name as [tune] writes it, where it goes in the recipe, and its space."""

    name: str                          # "lr", "model.options.base_filters"
    table: str                         # train | data | model
    key: str                           # the key in the table (for model: the builder option)
    choices: tuple = ()                # a choice list, or () for a range
    low: float | int | None = None     # a range: min, max, log, step
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    integer: bool = False              # a range of integers (the key takes an integer)

    def overrides(self, value) -> dict:
        """The recipe overrides that set this knob to `value`."""
        if self.table == "model":
            return {"model": {"options": {self.key: value}}}
        return {self.table: {self.key: value}}

    def to_dict(self) -> dict:
        space = ({"choices": list(self.choices)} if self.choices else
                 {"min": self.low, "max": self.high, "log": self.log, "step": self.step, "integer": self.integer})
        return {"name": self.name, "key": f"{self.table}.{'options.' if self.table == 'model' else ''}{self.key}",
                **space}

    def declare(self, hp) -> None:
        """This knob on KerasTuner's HyperParameters."""
        if self.choices:
            hp.Choice(self.name, list(self.choices))
        elif self.integer:
            hp.Int(self.name, int(self.low), int(self.high), step=None if self.step is None else int(self.step),
                   sampling="log" if self.log else "linear")
        else:
            hp.Float(self.name, float(self.low), float(self.high), step=self.step,
                     sampling="log" if self.log else "linear")


def flatten(table: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """[tune]'s entries as (dotted name, space): a TOML dotted key (model.options.x = [...]) nests tables."""
    out = []
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name in _NESTS:
            out += flatten(value, name + ".")
        else:
            out.append((name, value))
    return out


def _place(name: str, base: Recipe, source) -> tuple[str, str]:
    """(table, key) of a [tune] name, or the one-line error naming it."""
    from segcli.models import builder_options, model_entry

    parts = name.split(".")
    options = builder_options(model_entry(base.model.name).builder)
    if len(parts) == 1:
        table = next((t for t in ("train", "data") if name in recipes.DEFAULTS[t]), None)
        if table is not None and (table, name) in _NOT_TUNED:
            raise SegcliError(f"[tune] {name}: not searchable: it {_NOT_TUNED[table, name]}", source)
        if table is not None:
            return table, name
        hint = (f" (an option of {base.model.name}: write model.options.{name})" if name in options else "")
        raise SegcliError(f"[tune] {name}: not a [train] or [data] key{hint}; valid names: a [train] or [data] "
                          "key, train.KEY, data.KEY or model.options.NAME", source)
    if len(parts) == 2 and parts[0] in recipes.DEFAULTS and parts[1] in recipes.DEFAULTS[parts[0]]:
        table, key = parts
    elif len(parts) == 3 and parts[:2] == ["model", "options"]:
        if parts[2] not in options:
            raise SegcliError(f"[tune] {name}: {parts[2]!r} is not an option of model {base.model.name!r}; valid "
                              f"options: {', '.join(options)}", source)
        return "model", parts[2]
    else:
        raise SegcliError(f"[tune] {name}: unknown key; valid names: a [train] or [data] key, train.KEY, data.KEY "
                          "or model.options.NAME", source)
    if (table, key) in _NOT_TUNED:
        raise SegcliError(f"[tune] {name}: not searchable: it {_NOT_TUNED[table, key]}", source)
    return table, key


def _default(table: str, key: str, base: Recipe):
    if table == "model":
        from segcli.models import builder_defaults, model_entry

        return builder_defaults(model_entry(base.model.name).builder)[key]
    return recipes.DEFAULTS[table][key]


def _check_value(knob: Knob, value, base: Recipe, source) -> None:
    """The value as the recipe would take it for this key (the same checks), else one line naming it."""
    tables = base.to_dict()
    if knob.table == "model":
        tables["model"]["options"] = {**tables["model"]["options"], knob.key: value}
    else:
        tables[knob.table][knob.key] = value
    try:
        recipes.resolve(tables)
    except SegcliError as exc:
        raise SegcliError(f"[tune] {knob.name}: {exc.problem}", source) from None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_tune_table(table, base: Recipe, source, algorithm: str = DEFAULT_ALGORITHM) -> list[Knob]:
    """[tune] -> the knobs, every name, space and value checked (errors name `source`, the recipe file, and the
    key). `base`: the recipe the trials start from (its model's options are the valid model.options names)."""
    if not isinstance(table, dict) or not table:
        raise SegcliError("has no [tune] table (or an empty one): nothing to search; name the keys to search there, "
                          "e.g. lr = {min = 3e-4, max = 1e-2, log = true}", source)
    knobs = []
    for name, space in flatten(table):
        table_name, key = _place(name, base, source)
        if algorithm == "hyperband" and (table_name, key) == ("train", "epochs"):
            raise SegcliError(f"[tune] {name}: hyperband chooses each trial's epochs (up to the recipe's); do not "
                              "search it", source)
        default = _default(table_name, key, base)
        if isinstance(space, list):
            knob = _choice_knob(name, table_name, key, space, default, source)
            for value in knob.choices:
                _check_value(knob, value, base, source)
        elif isinstance(space, dict):
            knob = _range_knob(name, table_name, key, space, default, source)
            for value in (knob.low, knob.high):
                _check_value(knob, value, base, source)
        else:
            raise SegcliError(f"[tune] {name}: must be a list of choices or a range {{min = ..., max = ...}}, got "
                              f"{space!r}", source)
        knobs.append(knob)
    return knobs


def _choice_knob(name, table, key, space: list, default, source) -> Knob:
    if not space:
        raise SegcliError(f"[tune] {name}: the choice list is empty", source)
    if not all(isinstance(v, (bool, str)) or _number(v) for v in space):
        raise SegcliError(f"[tune] {name}: choices must be numbers, strings or true/false (KerasTuner's Choice), "
                          f"got {space!r}", source)
    kinds = {bool if isinstance(v, bool) else str if isinstance(v, str) else float for v in space}
    if len(kinds) > 1:
        raise SegcliError(f"[tune] {name}: choices must all be of one kind, got {space!r}", source)
    if kinds == {float} and (any(isinstance(v, float) for v in space) or isinstance(default, float)):
        space = [float(v) for v in space]  # 1 and 0.5 in one list: KerasTuner's Choice takes one type
    if len(set(space)) != len(space):
        raise SegcliError(f"[tune] {name}: the choice list repeats a value: {space!r}", source)
    return Knob(name, table, key, choices=tuple(space))


def _range_knob(name, table, key, space: dict, default, source) -> Knob:
    unknown = [k for k in space if k not in RANGE_KEYS]
    if unknown:
        raise SegcliError(f"[tune] {name}: unknown range key {unknown[0]!r}; a range takes {', '.join(RANGE_KEYS)}",
                          source)
    if "min" not in space or "max" not in space:
        raise SegcliError(f"[tune] {name}: a range needs min and max, got {space!r}", source)
    low, high, log, step = space["min"], space["max"], space.get("log", False), space.get("step")
    if isinstance(default, bool) or not _number(default):
        raise SegcliError(f"[tune] {name}: a range needs a numeric key; give a choice list instead", source)
    if not (_number(low) and _number(high)) or low >= high:
        raise SegcliError(f"[tune] {name}: a range needs numbers min < max, got min = {low!r}, max = {high!r}",
                          source)
    if not isinstance(log, bool):
        raise SegcliError(f"[tune] {name}: log must be true or false, got {log!r}", source)
    if log and low <= 0:
        raise SegcliError(f"[tune] {name}: a log range needs min > 0, got {low!r}", source)
    if step is not None and (not _number(step) or step <= 0):
        raise SegcliError(f"[tune] {name}: step must be a number > 0, got {step!r}", source)
    if log and step is not None:
        raise SegcliError(f"[tune] {name}: give log or step, not both", source)
    integer = isinstance(default, int)
    if integer and not all(float(v).is_integer() for v in (low, high, step or 1)):
        raise SegcliError(f"[tune] {name}: {key} takes integers; min, max and step must be integers", source)
    if integer:
        low, high, step = int(low), int(high), None if step is None else int(step)
    return Knob(name, table, key, low=low, high=high, log=log, step=step, integer=integer)



def show_value(value) -> str:
    """A knob's value as tune.md, the CLI's table and the progress lines show it (3 digits for a float)."""
    return f"{value:.3g}" if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)
