"""Recipes: every training knob in one TOML file, overridable from the command line.

A recipe has three tables. `[model]` names an architecture from the registry and its builder
options, `[data]` the input size and augmentation, `[train]` the optimiser, schedule, loss and
run length. Anything left out takes the defaults (the fields of ModelSpec, DataSpec and TrainSpec, in
`spec`); an unknown key is an error that lists the valid ones, so a typo never silently trains
something else.

Parsed once: `resolve(file, flags)` checks every value (defaults < recipe file < flags; the rules in
`rules`, the parsing in `parse`) and returns a frozen, typed `Recipe`; everything downstream reads
`recipe.train.batch_size`, never string keys. `save` writes it back as a run's recipe.toml, which
`load_resolved` reads back equal. Shipped recipes are package data in segcli/resources/recipes/
(`recipefiles`). Import from here: `from segcli import recipe`.
"""

from __future__ import annotations

from segcli.choices import SWITCHES, parse_switch
from segcli.recipe.parse import (DEFAULTS, Recipe, load_resolved, merge, read_recipe_file, resolve,
                                 resolve_for_model)
from segcli.recipe.recipefiles import RECIPES_DIR, find_recipe, save
from segcli.recipe.rules import FLAGS, RULES, WEIGHTS_WORDS, from_text, weights_path
from segcli.recipe.spec import TUNE_TABLE, DataSpec, ModelSpec, TrainSpec, held_out

__all__ = [
    "DEFAULTS", "FLAGS", "RECIPES_DIR", "RULES", "SWITCHES", "TUNE_TABLE", "WEIGHTS_WORDS", "DataSpec", "ModelSpec",
    "Recipe", "TrainSpec", "find_recipe", "from_text", "held_out", "load_resolved", "merge", "parse_switch",
    "read_recipe_file", "resolve", "resolve_for_model", "save", "weights_path",
]
