"""The rule of each recipe value and its message: each rule returns the value (8.0 -> 8 where an integer goes)
or raises Invalid, worded to follow the key or the flag; the model's options are checked against its builder."""

from __future__ import annotations

import math
from pathlib import Path

from segcli.choices import (AUX_STRIDES, LOSSES, OPTIMIZERS, PRECISIONS, SCHEDULES, STRATEGIES, check_choice,
                            parse_switch)
from segcli.errors import SegcliError

FLAGS = "command line"  # the source of overrides: a key train.batch_size comes from the flag --batch-size
# the keys with a list of choices (segcli.choices: the modules that act on them import the same lists)
CHOICES = {("train", "loss"): LOSSES, ("train", "precision"): ("auto", *PRECISIONS),
           ("train", "optimizer"): OPTIMIZERS, ("train", "schedule"): SCHEDULES,
           ("train", "distribute"): STRATEGIES}
WEIGHTS_WORDS = ("none", "imagenet")  # encoder_weights: one of these, or a weights file's path
MAX_EPOCHS = 100_000  # the most epochs (warm-up, step and freeze epochs too) a recipe may name: 1e9 is a slip


class Invalid(Exception):
    """A value's problem, worded to follow its key or flag: 'must be an integer >= 1, got 2.5'."""


def switch_text(value: bool | None):
    """A switch as a recipe file holds it: "auto", true or false."""
    return "auto" if value is None else value


def integer(value, low: int | None = 0, high: int | None = None) -> int:
    """An integer (8.0 counts as 8) in [low, high]; low None: any integer."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low) or (
            high is not None and value > high):
        rule = f" from {low} to {high}" if high is not None else "" if low is None else f" >= {low}"
        raise Invalid(f"must be an integer{rule}, got {value!r}")
    return value


def number(value, low: float | None = 0.0, *, above: bool = False, below: float | None = None,
           high: float | None = None) -> float:
    """A finite number >= low (> low when `above`; low None: any), < below and <= high when given."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and (
        low is None or (value > low if above else value >= low)) and (below is None or value < below) and (
        high is None or value <= high)
    if not ok:
        rule = ("" if low is None else f" in [{low:g}, {below:g})" if below is not None
                else f" > {low:g}" if above else f" >= {low:g}")
        rule += f" and <= {high:g}" if high is not None else ""
        raise Invalid(f"must be a number{rule}, got {value!r}")
    return float(value)


def pair(value, item, what: str, *, empty: bool = False, ordered: bool = False) -> list:
    """[a, b] of `item` values (min <= max when `ordered`); [] too when `empty`."""
    if empty and value == []:
        return []
    try:
        if not isinstance(value, list) or len(value) != 2:
            raise Invalid("")
        both = [item(v) for v in value]
    except Invalid:
        raise Invalid(f"must be {'[] or ' if empty else ''}{what}, got {value!r}") from None
    if ordered and both[0] > both[1]:
        raise Invalid(f"must be {what} with min <= max, got {value!r}")
    return both


def boolean(value) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false, got {value!r}")
    return value


def switch(value):
    """auto | true | false (on/off too): a TOML bool, or one of the words (any case; flags give text)."""
    try:
        return switch_text(parse_switch(value))
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def string(value) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a string, got {value!r}")
    return value


def choice(value, choices: tuple) -> str:
    try:
        return check_choice(value, choices)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def epoch_list(value) -> list[int]:
    try:
        epochs = [integer(v, 1) for v in value] if isinstance(value, list) else None
    except Invalid:
        epochs = None
    if epochs is None or any(a >= b for a, b in zip(epochs, epochs[1:])):
        raise Invalid(f"must be a list of increasing integers >= 1, got {value!r}")
    if epochs and epochs[-1] > MAX_EPOCHS:
        raise Invalid(f"must be a list of increasing integers from 1 to {MAX_EPOCHS}, got {value!r}")
    return epochs


TRAIN_SPLITS = ("train", "val")  # what [data] train_splits may name: test stays aside, never trained on


def split_list(value) -> list[str]:
    """[data] train_splits: ["train"] or ["train", "val"] ("train,val" from the flag)."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if (not isinstance(value, list) or "train" not in value or len(set(value)) != len(value)
            or any(v not in TRAIN_SPLITS for v in value)):
        raise Invalid(f'must be ["train"] or ["train", "val"], got {value!r}')
    return value


def size(value, *, empty: bool = False) -> list[int]:
    return pair(value, lambda v: integer(v, 1), "[height, width] in pixels, two integers >= 1", empty=empty)


RULES = {
    ("data", "size"): size,
    ("data", "scale"): lambda v: pair(v, lambda x: number(x, above=True), "[min, max], two numbers > 0",
                                      ordered=True),
    ("data", "short_side"): lambda v: pair(v, lambda x: integer(x, 1), "[min, max] in pixels, two integers >= 1",
                                           empty=True, ordered=True),
    ("data", "center_crop"): boolean,
    ("data", "flip"): boolean,
    ("data", "void_as_class"): boolean,
    ("data", "val_fraction"): lambda v: number(v, 0.0, below=1.0),
    ("data", "eval_short_side"): lambda v: integer(v, 0),
    ("data", "eval_crop"): lambda v: size(v, empty=True),
    ("data", "cache"): switch,
    ("data", "classes"): string,
    ("data", "palette_by_colour"): boolean,
    ("data", "train_splits"): split_list,
    ("train", "epochs"): lambda v: integer(integer(v, 1), 1, MAX_EPOCHS),  # ">= 1" first; the bound is
    # generous (--epochs 1e9 is a slip, not a plan)
    ("train", "batch_size"): lambda v: integer(v, 1),
    ("train", "lr"): lambda v: number(v, above=True, high=10.0),  # past 10 no optimizer here trains
    ("train", "weight_decay"): lambda v: number(v, high=1.0),  # decoupled: each step takes lr x this of a weight
    ("train", "step_epochs"): epoch_list,
    ("train", "step_gamma"): lambda v: number(v, above=True, high=1.0),  # a decay: lr *= this at each step
    ("train", "warmup_epochs"): lambda v: number(v, high=MAX_EPOCHS),  # and <= epochs: schedule_problem
    ("train", "class_weights"): string,
    ("train", "label_smoothing"): lambda v: number(v, 0.0, below=1.0),
    ("train", "ohem_threshold"): lambda v: number(v, above=True, high=1.0),
    ("train", "ohem_min_kept"): lambda v: number(v, above=True, high=1.0),
    ("train", "ema_momentum"): lambda v: number(v, 0.0, below=1.0),  # 0: off
    ("train", "aux_weight"): lambda v: number(v, 0.0, high=10.0),  # 0: no auxiliary head
    ("train", "aux_stride"): lambda v: choice(integer(v, 1), AUX_STRIDES),
    ("train", "jit"): switch,
    ("train", "steps_per_execution"): lambda v: integer(v, 0),  # 0: automatic
    ("train", "max_minutes"): number,  # 0: no limit
    ("train", "seed"): lambda v: integer(v, 0, 2 ** 32 - 1),  # what NumPy's seeding takes
    ("train", "freeze_encoder_epochs"): lambda v: integer(integer(v, 0), 0, MAX_EPOCHS),
    ("train", "encoder_lr_mult"): lambda v: number(v, above=True, high=100.0),
    **{key: (lambda v, c=choices: choice(v, c)) for key, choices in CHOICES.items()},
}


def schedule_problem(train: dict) -> str | None:
    """What is wrong between the [train] values of a whole recipe (each already checked alone), else None: a
    warm-up longer than the run would end training before the learning rate reaches lr."""
    warmup, epochs = train["warmup_epochs"], train["epochs"]
    if warmup > epochs:
        return (f"[train] warmup_epochs = {warmup:g} must be <= epochs ({epochs}): training would end before the "
                f"warm-up does; lower warmup_epochs or raise epochs (--epochs)")
    return None


def from_text(text: str):
    """A flag's text as the number it spells ('8' -> 8, '1e-3' -> 0.001, 'nan' -> nan), else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def flag(table: str, key: str) -> str:
    return "MODEL" if (table, key) == ("model", "name") else "--" + key.replace("_", "-")


def error(source, where: str, problem: str) -> SegcliError:
    """'--epochs: must be ...' for a flag; 'FILE: [train] epochs must be ...' for a file; no path for a dict."""
    if source == FLAGS:
        return SegcliError(f"{where}: {problem}")
    return SegcliError(f"{where} {problem}", source)


# --- the model: its name, its builder's options -----------------------------------------------------------

def model_name(value) -> str:
    from segcli.models import list_models

    if not isinstance(value, str) or value not in list_models():
        raise Invalid(f"must be one of {', '.join(list_models())}, got {value!r}")
    return value


def model_options(name: str, options: dict, source) -> dict:
    """Option names from the builder's signature; each value of the type of its default (8.0 -> 8 for an int).
    The ranges (depth >= 1, dropout in [0, 1), ...) are the builder's to check."""
    from segcli.models import builder_defaults, model_entry

    defaults = builder_defaults(model_entry(name).builder)
    out = {}
    for key, value in options.items():
        try:
            if key not in defaults:
                raise Invalid(f"is not an option of model {name!r}; valid options: {', '.join(defaults)}")
            default = defaults[key]
            if isinstance(default, bool):
                value = boolean(value)
            elif isinstance(default, int):
                value = integer(value, None)
            elif isinstance(default, float):
                value = number(value, None)
            elif isinstance(default, str):
                value = string(value)
            if key == "encoder":
                value = encoder_name(value)
            elif key == "encoder_weights":
                value = encoder_weights(value)
        except Invalid as exc:  # flags set only the options they name (--encoder, --encoder-weights)
            where = flag("model", key) if source == FLAGS else f"[model.options] {key}"
            raise error(source, where, str(exc)) from None
        out[key] = value
    return out


def encoder_name(value) -> str:
    from segcli.models import list_encoders
    from segcli.models.blocks import ENCODERS

    valid = (*ENCODERS, *list_encoders())
    if value not in valid:
        raise Invalid(f"must be one of {', '.join(valid)}, got {value!r}")
    return value


def encoder_weights(value) -> str:
    """none | imagenet | a path (kept as text; the builder checks the file); TOML has no None, so "none"."""
    if value is None:
        return "none"
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"must be none, imagenet or a weights file path, got {value!r}")
    word = value.strip().lower()
    return word if word in WEIGHTS_WORDS else value


def weights_path(value: str, base: str | Path | None = None) -> str:
    """encoder_weights with a relative path made absolute: against ``base`` (the recipe file's folder), else
    the working directory; none/imagenet unchanged."""
    if not isinstance(value, str) or value.strip().lower() in WEIGHTS_WORDS:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (Path(base or ".") / path).resolve())


def model_encoder(name: str, options: dict) -> str | None:
    """The encoder the model will be built with: its option, else the registry preset, else the builder's default
    (None: the builder takes no encoder)."""
    from segcli.models import model_entry

    return options.get("encoder", model_entry(name).defaults.get("encoder"))
