"""The choice lists of the recipe's keys, their one check, and the one reader of switches (auto/on/off).

A leaf: it imports nothing of segcli. `segcli.recipe` checks a value against these lists when it parses a
recipe, and the modules that act on a value import its list from here (`training.losses`, `training.optim`,
`training.distribute`, `precision`), so the recipe imports none of them.
"""

from __future__ import annotations

LOSSES = ("ce", "focal", "dice", "ce+dice", "ohem")  # [train] loss: segcli.training.losses (KINDS there)
AUX_STRIDES = (4, 8, 16, 32)  # [train] aux_stride: segcli.training.aux
OPTIMIZERS = ("adam", "adamw", "sgd")  # [train] optimizer: segcli.training.optim
SCHEDULES = ("constant", "step", "cosine", "onecycle")  # [train] schedule: segcli.training.optim
STRATEGIES = ("auto", "none", "mirrored", "multi")  # [train] distribute, --distribute: segcli.training.distribute
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")  # [train] precision (or auto): segcli.precision
SWITCHES = ("auto", "true", "false")  # cache and jit: auto, or a bool (TOML bools, or these words; on/off too)
_SWITCH_WORDS = {"auto": None, "true": True, "on": True, "yes": True, "1": True,
                 "false": False, "off": False, "no": False, "0": False}


def check_choice(value, choices: tuple) -> str:
    """`value` when it is one of `choices`; else ValueError worded to follow a key or a flag
    ("must be one of a, b, got 'c'"): the one message for a value outside its list."""
    if isinstance(value, (bool, dict, list)) or value not in choices:  # (True == 1: a bool is no stride)
        raise ValueError(f"must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def parse_switch(value) -> bool | None:
    """The one reader of auto | on | off | true | false (any case; yes/no and 1/0 too) and of TOML bools:
    None for auto, else the bool. ValueError for anything else."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _SWITCH_WORDS:
        return _SWITCH_WORDS[value.strip().lower()]
    raise ValueError(f"must be {', '.join(SWITCHES[:-1])} or {SWITCHES[-1]}, got {value!r}")
