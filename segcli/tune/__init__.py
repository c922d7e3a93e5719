"""`segcli tune`: search a recipe's knobs with KerasTuner, each trial a `segcli train` run folder, within a time
budget.

The modules: `space` (the recipe's [tune] table: the knobs and their search spaces, checked before any
training), `search` (`tune`: KerasTuner's oracles drive the trials; the tune folder and `--resume`) and
`report` (tune.json, tune.md, tune.png and best-recipe.toml, written after every trial). keras-tuner is the
optional extra `segcli[tune]`; importing this package does not import it.

>>> from segcli.tune import tune
>>> result = tune("unet", "sample_data", recipe_file="sample-unet", trials=3, out="tune-unet")  # tune.json's content
"""

from segcli.tune.report import TABLE_COLUMNS, table_cells, to_markdown, trial_rows
from segcli.tune.search import INSTALL_HINT, TuneInterrupted, keras_tuner, tune
from segcli.tune.space import ALGORITHMS, Knob, parse_tune_table

__all__ = ["tune", "parse_tune_table", "Knob", "TuneInterrupted", "keras_tuner", "ALGORITHMS", "INSTALL_HINT",
           "table_cells", "TABLE_COLUMNS", "trial_rows", "to_markdown"]
