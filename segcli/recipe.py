"""Recipes: every training knob in one TOML file, overridable from the command line.

A recipe has three tables. `[model]` names an architecture from the registry and its builder
options, `[data]` the input size and augmentation, `[train]` the optimiser, schedule, loss and
run length. Anything left out takes the defaults below; an unknown key is an error that lists
the valid ones, so a typo never silently trains something else.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from segcli.errors import SegcliError
from segcli.files import write_text

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"

DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {
        "name": "unet",
        "options": {},
    },
    "data": {
        "size": [256, 256],          # training crop, height x width
        "scale": [0.75, 1.25],       # random scale factor range (ignored when short_side is set)
        "short_side": [],            # random short-side resize range in pixels, e.g. [400, 600]
        "center_crop": False,        # crop the centre instead of a random window
        "flip": True,
        "void_as_class": False,      # train the ignore label as an extra class (the tutorial's protocol)
        "val_fraction": 0.1,         # held out of train when the data has no val split
        "eval_short_side": 0,        # resize val images' short side first (0: keep the size)
        "eval_crop": [],             # centre-crop val images to this size after the resize
        "cache": "auto",             # keep decoded images in memory: auto | true | false
        "classes": "",               # classes.json, relative to the recipe file (--classes wins)
    },
    "train": {
        "epochs": 20,
        "batch_size": 8,
        "optimizer": "adam",         # adam | adamw | sgd
        "lr": 1e-3,
        "weight_decay": 0.0,
        "schedule": "constant",      # constant | step | cosine | onecycle
        "step_epochs": [],           # schedule=step: epochs after which lr *= step_gamma
        "step_gamma": 0.1,
        "warmup_epochs": 0.0,
        "loss": "ce",                # ce | dice | focal | ce+dice
        "class_weights": "none",     # none | median-frequency | path to a JSON list
        "label_smoothing": 0.0,
        "precision": "auto",         # auto | float32 | mixed_float16 | mixed_bfloat16
        "distribute": "auto",        # auto | none | mirrored
        "jit": "auto",               # auto | true | false (XLA)
        "steps_per_execution": 0,    # 0: automatic
        "max_minutes": 0.0,          # stop after this much training time (0: no limit)
        "seed": 0,
    },
}

CHOICES = {
    ("train", "optimizer"): ("adam", "adamw", "sgd"),
    ("train", "schedule"): ("constant", "step", "cosine", "onecycle"),
    ("train", "loss"): ("ce", "dice", "focal", "ce+dice"),
    ("train", "precision"): ("auto", "float32", "mixed_float16", "mixed_bfloat16"),
    ("train", "distribute"): ("auto", "none", "mirrored"),
}


def _check(recipe: dict, source: str) -> dict:
    for table, values in recipe.items():
        if table not in DEFAULTS:
            raise SegcliError(f"unknown table [{table}]; valid tables: {', '.join(DEFAULTS)}", source)
        for key, value in values.items():
            if key not in DEFAULTS[table]:
                raise SegcliError(
                    f"unknown key '{key}' in [{table}]; valid keys: {', '.join(DEFAULTS[table])}", source)
            default = DEFAULTS[table][key]
            if key == "options" or key in ("cache", "jit"):
                continue
            if isinstance(default, bool) != isinstance(value, bool) or (
                    isinstance(default, (int, float)) and not isinstance(value, (int, float))) or (
                    isinstance(default, (str, list)) and not isinstance(value, type(default))):
                raise SegcliError(f"[{table}] {key} = {value!r}: expected a {type(default).__name__}", source)
            choices = CHOICES.get((table, key))
            if choices and value not in choices:
                raise SegcliError(f"[{table}] {key} = {value!r}: choose one of {', '.join(choices)}", source)
    return recipe


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
    """A path, or the name of a shipped recipe (`camvid-unet` finds recipes/camvid-unet.toml)."""
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
    path = find_recipe(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SegcliError(f"not valid TOML: {exc}", path) from None
    classes = raw.get("data", {}).get("classes")
    if isinstance(classes, str) and classes and not Path(classes).is_absolute():
        raw["data"]["classes"] = str((path.parent / classes).resolve())
    return _check(raw, str(path))


def resolve(recipe_file: str | Path | dict | None = None, overrides: dict | None = None) -> dict:
    """Defaults, then the recipe (a file or an already-read dict), then command-line overrides (flags win)."""
    recipe = copy.deepcopy(DEFAULTS)
    if isinstance(recipe_file, dict):
        recipe = merge(recipe, recipe_file)
    elif recipe_file is not None:
        recipe = merge(recipe, read_recipe_file(recipe_file))
    if overrides:
        recipe = merge(recipe, _check({t: {k: v for k, v in kv.items() if v is not None}
                                       for t, kv in overrides.items()}, "command line"))
    return recipe


def save(recipe: dict, path: str | Path) -> None:
    write_text(path, "# resolved by segcli: defaults < recipe file < command-line flags\n" + tomli_w.dumps(recipe))


def load_resolved(path: str | Path) -> dict:
    """A recipe.toml written into a run folder (complete, so no defaults are mixed in)."""
    return merge(copy.deepcopy(DEFAULTS), read_recipe_file(path))
