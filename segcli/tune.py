"""`tune`: search a recipe's knobs with KerasTuner, each trial a `segcli train` run folder, within a time budget.

A recipe's `[tune]` table names the knobs and their search spaces (checked here, before any training):

    [tune]
    lr = {min = 3e-4, max = 1e-2, log = true}     # a range: min, max, and optionally log = true, step
    batch_size = [4, 8, 16]                       # a choice list: numbers, strings or true/false
    loss = ["ce", "ce+dice"]
    "model.options.base_filters" = [16, 24, 32]   # a dotted name, quoted (a TOML dotted key means the same)

A bare name is a key of [train], else of [data]; `train.KEY` and `data.KEY` name the table; `model.options.NAME`
is an option of the model's builder. Every value is checked as the same key in a recipe would be.

KerasTuner does the searching (its RandomSearch, BayesianOptimization and Hyperband oracles) and keeps its state
in OUT/keras-tuner/, from which `--resume` continues; `SegcliTuner.run_trial` trains one trial through
`segcli.runs.train_and_evaluate` (what `segcli train` runs) into OUT/trial-NNN/ and returns the val mIoU of its
best.keras. The time budget: each trial's max_minutes is the budget left divided by the trials left, and no trial
starts once it is spent (a trial trains at least one epoch, so a search can overrun by about one epoch).

Written after every trial (so a kill leaves them up to date): tune.json, tune.md, tune.png (val mIoU against the
main knobs) and best-recipe.toml (the best trial's resolved recipe, for `segcli train --recipe`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from segcli import recipe as recipes
from segcli.errors import SegcliError, describe, first_line
from segcli.files import (atomic_path, check_replaceable, ensure_writable_dir, folder_lock, mark_segcli_folder,
                          remove_leftovers, write_json, write_text)
from segcli.progress import NullProgress, Progress
from segcli.recipe import Recipe
from segcli.runfolder import RunFolder

ALGORITHMS = ("random", "bayesian", "hyperband")
DEFAULT_ALGORITHM = "random"
DEFAULT_TRIALS = 10
INSTALL_HINT = 'KerasTuner is not installed; install it with: pip install "segcli[tune]" (or pip install keras-tuner)'
OBJECTIVE = "val_miou"  # the evaluation of best.keras on val (segcli evaluate's figure), maximised
SEARCH_RECIPE = "search.toml"   # the starting recipe, resolved, with its [tune] table: what every trial starts from
SETTINGS = "search.json"        # model, data, algorithm, trials, budget: what --resume continues with
PROJECT = "keras-tuner"         # KerasTuner's project folder (oracle and trial states)
RANGE_KEYS = ("min", "max", "log", "step")
_NESTS = ("train", "data", "model", "model.options")  # where a TOML dotted key in [tune] may nest
_NOT_TUNED = {("train", "max_minutes"): "is set for each trial from --max-minutes",
              ("model", "name"): "is the MODEL argument; tune one model at a time",
              ("model", "options"): "is a table; name one option as model.options.NAME"}


def keras_tuner():
    """The keras_tuner module, or the one-line install hint when it is missing."""
    try:
        import keras_tuner as kt
    except ImportError:
        raise SegcliError(INSTALL_HINT) from None
    return kt


class TuneInterrupted(SegcliError):
    """Ctrl-C during a search: finished trials are kept, and `segcli tune --resume OUT` continues."""

    exit_code = 130

    def __init__(self, out: Path):
        self.out = out
        super().__init__(f"search interrupted; continue with: segcli tune --resume {out}")


# --- [tune]: knobs and their spaces --------------------------------------------------------------------

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


def _flatten(table: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """[tune]'s entries as (dotted name, space): a TOML dotted key (model.options.x = [...]) nests tables."""
    out = []
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name in _NESTS:
            out += _flatten(value, name + ".")
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
        import inspect

        from segcli.models import model_entry

        return inspect.signature(model_entry(base.model.name).builder).parameters[key].default
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
    for name, space in _flatten(table):
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


# --- the search ----------------------------------------------------------------------------------------

def _positive_int(text, flag: str) -> int:
    try:
        value = int(str(text))
    except ValueError:
        value = 0
    if value < 1:
        raise SegcliError(f"{flag}: must be an integer >= 1, got {text!r}")
    return value


def _minutes(text) -> float:
    try:
        value = float(str(text))
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise SegcliError(f"--max-minutes: must be a number >= 0 (0: no limit), got {text!r}")
    return value


class _Search:
    """One search folder: its settings, the starting recipe, the knobs, and the trials' run folders."""

    def __init__(self, out: Path, settings: dict):
        self.out = Path(out)
        self.settings = settings
        self.base_tables = recipes.read_recipe_file(self.recipe_path)
        tune_table = self.base_tables.pop(recipes.TUNE_TABLE, None)
        self.base = recipes.resolve(self.base_tables)
        knobs = parse_tune_table(tune_table, self.base, self.recipe_path, settings["algorithm"])
        order = settings.get("knobs") or []  # [tune]'s order (search.toml's TOML puts ranges last)
        self.knobs = sorted(knobs, key=lambda k: order.index(k.name) if k.name in order else len(order))
        self.started = time.monotonic()

    recipe_path = property(lambda self: self.out / SEARCH_RECIPE)

    def trial_dir(self, trial_id: str) -> Path:
        return self.out / f"trial-{int(trial_id):03d}"

    def budget_left(self, oracle) -> float | None:
        """Minutes left of --max-minutes (the minutes finished trials took count), None: no limit."""
        budget = self.settings["max_minutes"]
        if not budget:
            return None
        return budget - sum(_metric(t, "minutes") or 0.0 for t in oracle.trials.values())

    def trial_limit(self, oracle) -> float:
        """This trial's max_minutes: the budget left shared by the trials left (and the recipe's own limit)."""
        left = self.budget_left(oracle)
        own = self.base.train.max_minutes
        if left is None:
            return own
        done = sum(1 for t in oracle.trials.values() if t.status in ("COMPLETED", "FAILED"))
        share = max(left, 0.0) / max(self.settings["trials"] - done, 1)
        return min(own, share) if own else share


def _metric(trial, name: str):
    try:
        return trial.metrics.get_last_value(name) if trial.metrics.exists(name) else None
    except Exception:  # noqa: BLE001 - a trial that never reported
        return None


def _make_tuner(kt, search: _Search, progress: Progress):
    """A keras_tuner.Tuner whose trials are segcli trainings (reloaded from OUT/keras-tuner when it exists)."""
    from segcli.runs import train_and_evaluate
    from segcli.training import TrainingInterrupted

    class _Fatal(kt.errors.FatalError):
        """A trial's SegcliError: ends the search (KerasTuner would otherwise mark the trial failed and go on)."""

        def __init__(self, error: SegcliError):
            self.error = error
            super().__init__(str(error))

    class SegcliTuner(kt.Tuner):
        def pre_create_trial(self):
            left = search.budget_left(self.oracle)
            if left is not None and left <= 0:  # the budget is spent: the oracle starts no more trials
                self.oracle.max_trials = len(self.oracle.trials)
                search.stopped_by_budget = True

        def run_trial(self, trial, *args, **kwargs):
            import keras

            values = trial.hyperparameters.values
            knobs = {k.name: values[k.name] for k in search.knobs if k.name in values}
            overrides: dict = {}
            for knob in search.knobs:
                if knob.name in knobs:
                    overrides = recipes.merge(overrides, knob.overrides(knobs[knob.name]))
            limit = search.trial_limit(self.oracle)
            overrides = recipes.merge(overrides, {"train": {"max_minutes": limit}})
            if "tuner/epochs" in values:  # hyperband: this round's epochs (a promoted trial trains from scratch)
                overrides = recipes.merge(overrides, {"train": {"epochs": int(values["tuner/epochs"])}})
            run = RunFolder(search.trial_dir(trial.trial_id))
            shown = ", ".join(f"{k} = {_shown(v)}" for k, v in knobs.items())
            progress.message(f"tune: {run.path.name} ({len(self.oracle.trials)}/{search.settings['trials']}): "
                             f"{shown}" + (f"; up to {limit:.1f} min" if limit else ""))
            keras.backend.clear_session()
            start = time.monotonic()
            try:
                metrics = _train_trial(run, search, overrides, progress, train_and_evaluate)
            except TrainingInterrupted:
                raise KeyboardInterrupt from None
            except SegcliError as exc:  # bad data or settings: every trial would meet it
                raise _Fatal(exc) from None
            except Exception as exc:  # noqa: BLE001 - this trial failed (out of memory, ...): the search goes on
                line = describe(exc)
                progress.message(f"tune: {run.path.name} failed ({line})")
                raise kt.errors.FailedTrialError(line) from None
            minutes = (time.monotonic() - start) / 60.0
            evaluation = metrics.get("evaluation") or {}
            miou = evaluation.get("miou", metrics.get("best_val_miou"))
            accuracy = evaluation.get("pixel_accuracy", (metrics.get("val") or {}).get("pixel_accuracy"))
            progress.message(f"tune: {run.path.name}: val mIoU {_pct(miou)}, pixel accuracy {_pct(accuracy)}, "
                             f"{minutes:.1f} min")
            return {OBJECTIVE: float("nan") if miou is None else float(miou),
                    "pixel_accuracy": float("nan") if accuracy is None else float(accuracy), "minutes": minutes}

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            write_report(search, self.oracle)

    search.stopped_by_budget = False
    algorithm, trials, seed = search.settings["algorithm"], search.settings["trials"], search.base.train.seed + 1
    hp = kt.HyperParameters()
    for knob in search.knobs:
        knob.declare(hp)
    objective = kt.Objective(OBJECTIVE, direction="max")
    common = dict(objective=objective, hyperparameters=hp, allow_new_entries=False, tune_new_entries=False, seed=seed)
    if algorithm == "random":
        oracle = kt.oracles.RandomSearchOracle(max_trials=trials, **common)
    elif algorithm == "bayesian":
        oracle = kt.oracles.BayesianOptimizationOracle(max_trials=trials, **common)
    else:
        oracle = kt.oracles.HyperbandOracle(max_epochs=search.base.train.epochs, **common)
    with contextlib.redirect_stdout(io.StringIO()):  # KerasTuner prints "Reloading Tuner from ..."
        try:
            tuner = SegcliTuner(oracle=oracle, directory=str(search.out), project_name=PROJECT, overwrite=False)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise SegcliError(f"KerasTuner's state cannot be read ({first_line(exc)}); start the search "
                              "again with --force", search.out / PROJECT) from None
    tuner.oracle.max_trials = trials  # --resume may ask for more (or fewer) trials than the first run
    tuner.oracle.verbose = 0
    tuner.save()  # oracle.json from the start: a kill in the first trial resumes that trial
    return tuner, _Fatal


def _train_trial(run: RunFolder, search: _Search, overrides: dict, progress: Progress, train_and_evaluate) -> dict:
    """One trial's run folder: finished already (a kill after it finished) -> its metrics; a backup -> resumed;
    else trained from the start (replacing a run folder that a kill left without a backup)."""
    if run.metrics_path.is_file() and run.info_path.is_file() and run.info().get("finished"):
        return run.metrics()
    try:
        resumable = run.recipe_path.is_file() and run.info_path.is_file() and run.backup_state() is not None
    except SegcliError:  # a damaged backup: train the trial again
        resumable = False
    if resumable:
        return train_and_evaluate(None, None, resume=run.path, progress=progress).metrics
    settings = search.settings
    return train_and_evaluate(settings["model"], settings["data_dir"], recipe_file=search.recipe_path,
                              overrides=overrides, out=run.path, force=True, classes_file=settings["classes_file"],
                              progress=progress).metrics


def tune(model_name: str | None, data_dir: str | Path | None, *, recipe_file=None, trials=None, max_minutes=None,
         algorithm: str | None = None, out=None, resume=None, force: bool = False, classes_file=None,
         progress: Progress | None = None) -> dict:
    """Search the knobs of `recipe_file`'s [tune] table for MODEL on DATA_DIR into the folder `out` (or continue
    the search in `resume`). trials, max_minutes: the flags' text (None: default, or on resume the earlier
    value). progress: each training's progress (segcli.progress), and a message as each trial starts and ends.
    Returns tune.json's content. Raises TuneInterrupted on Ctrl-C."""
    kt = keras_tuner()
    progress = progress or NullProgress()
    if resume is not None:
        given = {"MODEL": model_name, "DATA_DIR": data_dir, "--recipe": recipe_file, "--algorithm": algorithm,
                 "--out": out, "--force": force, "--classes": classes_file}
        names = [name for name, value in given.items() if value]
        if names:
            raise SegcliError(f"--resume continues a search with its own settings and cannot take {', '.join(names)}"
                              " (it takes --trials and --max-minutes)")
        out = Path(resume)
        settings = _read_settings(out)
        if trials is not None:
            settings["trials"] = _positive_int(trials, "--trials")
        if max_minutes is not None:
            settings["max_minutes"] = _minutes(max_minutes)
        search = _Search(out, settings)
    else:
        search = _new_search(model_name, data_dir, recipe_file, trials, max_minutes, algorithm, out, force,
                             classes_file)
    out = search.out
    with folder_lock(out):
        remove_leftovers(out)
        write_json(out / SETTINGS, search.settings)
        tuner, fatal = _make_tuner(kt, search, progress)
        try:
            with _quiet_keras_tuner():
                tuner.search(verbose=0)
        except KeyboardInterrupt:
            write_report(search, tuner.oracle)
            raise TuneInterrupted(out) from None
        except fatal as exc:
            write_report(search, tuner.oracle)
            raise exc.error from None
        except RuntimeError as exc:  # KerasTuner: too many failed trials in a row
            write_report(search, tuner.oracle)
            raise SegcliError(f"the search stopped: {first_line(exc)} (see {PROJECT}/trial_*/trial.json)",
                              out) from None
        result = write_report(search, tuner.oracle, finished=True)
    if result["rows"] and result["best"] is None:
        raise SegcliError(f"no trial finished; the first failure: {result['rows'][0].get('error') or '?'}", out)
    return result


@contextlib.contextmanager
def _quiet_keras_tuner():
    """KerasTuner prints a failed trial's traceback when its DEBUG flag is on (its default); segcli keeps the
    failure's line in the trial's row instead."""
    from keras_tuner.src import config

    saved, config.DEBUG = config.DEBUG, False
    try:
        yield
    finally:
        config.DEBUG = saved


def _read_settings(out: Path) -> dict:
    if not out.is_dir():
        raise SegcliError("no such tune folder", out)
    try:
        settings = json.loads((out / SETTINGS).read_text())
        for key in ("model", "data_dir", "classes_file", "algorithm", "trials", "max_minutes"):
            settings[key]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SegcliError(f"not a segcli tune folder, or its {SETTINGS} is damaged ({exc})", out) from None
    return settings


def _new_search(model_name, data_dir, recipe_file, trials, max_minutes, algorithm, out, force, classes_file):
    """Every argument and the [tune] table checked, then the folder made: nothing is written before."""
    if model_name is None or data_dir is None:
        raise SegcliError("MODEL and DATA_DIR are required (or --resume DIR)")
    if recipe_file is None:
        raise SegcliError("--recipe is required: a recipe with a [tune] table naming the keys to search")
    if out is None:
        raise SegcliError("--out DIR is required: the folder for the trials and the results (or --resume DIR)")
    algorithm = algorithm or DEFAULT_ALGORITHM
    if algorithm not in ALGORITHMS:
        raise SegcliError(f"--algorithm: must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    settings = {"model": model_name, "data_dir": str(Path(data_dir).resolve()),
                "classes_file": str(Path(classes_file).resolve()) if classes_file else None, "algorithm": algorithm,
                "trials": DEFAULT_TRIALS if trials is None else _positive_int(trials, "--trials"),
                "max_minutes": 0.0 if max_minutes is None else _minutes(max_minutes),
                "recipe": str(recipe_file), "knobs": []}
    if not Path(data_dir).is_dir():
        raise SegcliError("no such data folder", data_dir)
    path = recipes.find_recipe(recipe_file)
    base, _ = recipes.resolve_for_model(model_name, path)
    tune_table = recipes.read_recipe_file(path).get(recipes.TUNE_TABLE)
    knobs = parse_tune_table(tune_table, base, path, algorithm)
    out = Path(out)
    replace = check_replaceable(out, force, "tune folder", also=", or --resume to continue it", kind="tune")
    ensure_writable_dir(out)
    if replace:
        with folder_lock(out):  # a search running in it is refused, not emptied
            for child in out.iterdir():
                if child.name != ".segcli.lock":
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    mark_segcli_folder(out, "tune")
    flat = {knob.name: space for knob, (_, space) in zip(knobs, _flatten(tune_table))}
    settings["knobs"] = list(flat)
    write_text(out / SEARCH_RECIPE, f"# segcli tune: the recipe every trial starts from ({recipe_file}, resolved "
               f"for {model_name}), and the knobs searched\n" + tomli_w.dumps({**base.to_dict(), "tune": flat}))
    write_json(out / SETTINGS, settings)
    return _Search(out, settings)


# --- the results ---------------------------------------------------------------------------------------

def _shown(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)


def _pct(value) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}%"


def trial_rows(search: _Search, oracle) -> list[dict]:
    """One row per trial KerasTuner started, in order: knobs, status, val mIoU, pixel accuracy, minutes, epochs."""
    rows = []
    for trial_id in sorted(oracle.trials, key=int):
        trial = oracle.trials[trial_id]
        run = RunFolder(search.trial_dir(trial_id))
        values = trial.hyperparameters.values
        epochs = None
        if run.metrics_path.is_file():
            with contextlib.suppress(SegcliError):
                epochs = run.metrics().get("epochs")
        miou = _metric(trial, OBJECTIVE)
        rows.append({"trial": run.path.name, "status": str(trial.status).lower(),
                     "knobs": {k.name: values.get(k.name) for k in search.knobs},
                     "val_miou": None if miou is None or miou != miou else miou,
                     "pixel_accuracy": _metric(trial, "pixel_accuracy"), "minutes": _metric(trial, "minutes"),
                     "epochs": epochs, "run_dir": str(run.path),
                     "error": trial.message.strip().splitlines()[-1].split("FailedTrialError: ", 1)[-1]
                     if trial.message else None})
    return rows


TABLE_COLUMNS = ("val mIoU", "pixel acc.", "minutes", "epochs")


def table_cells(row: dict, knobs: list[str]) -> list[str]:
    """A row's cells: the knobs, then TABLE_COLUMNS (for tune.md and the CLI's table alike)."""
    return ([_shown(row["knobs"].get(k)) if row["knobs"].get(k) is not None else "-" for k in knobs]
            + [_pct(row["val_miou"]), _pct(row["pixel_accuracy"]),
               "-" if row["minutes"] is None else f"{row['minutes']:.1f}",
               "-" if row["epochs"] is None else str(row["epochs"])])


def write_report(search: _Search, oracle, finished: bool = False) -> dict:
    """tune.json, tune.md, tune.png and best-recipe.toml from the trials so far; returns tune.json's content."""
    rows = trial_rows(search, oracle)
    scored = [r for r in rows if r["status"] == "completed" and r["val_miou"] is not None]
    best = max(scored, key=lambda r: r["val_miou"]) if scored else None
    out = search.out
    result = {"out": str(out), "settings": search.settings, "knobs": [k.to_dict() for k in search.knobs],
              "rows": rows, "best": best, "best_recipe": None, "finished": finished,
              "stopped_by_budget": bool(getattr(search, "stopped_by_budget", False)),
              "minutes": sum(r["minutes"] or 0.0 for r in rows)}
    if best is not None:
        result["best_recipe"] = str(out / "best-recipe.toml")
        _write_best_recipe(search, best, out / "best-recipe.toml")
    write_json(out / "tune.json", result)
    write_text(out / "tune.md", to_markdown(result))
    if scored:
        plot_tune(result, out / "tune.png")
    return result


def _write_best_recipe(search: _Search, best: dict, path: Path) -> None:
    """The best trial's resolved recipe, with the recipe's own max_minutes (the search's share is not a knob)."""
    recipe = RunFolder(best["run_dir"]).recipe()
    limited = recipe.train.max_minutes
    recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train,
                                                                    max_minutes=search.base.train.max_minutes))
    knobs = ", ".join(f"{k} = {_shown(v)}" for k, v in best["knobs"].items())
    note = (f"# (the search limited the trial to {limited:.1f} min; it trained {best['epochs']} epochs)\n"
            if limited and limited != recipe.train.max_minutes else "")
    write_text(path, f"# segcli tune {search.out}: the best trial so far, {best['trial']} "
               f"(val mIoU {_pct(best['val_miou'])}): {knobs}\n{note}# train with: segcli train "
               f"{recipe.model.name} DATA_DIR --recipe {path}\n" + tomli_w.dumps(recipe.to_dict()))


def to_markdown(result: dict) -> str:
    s, knobs = result["settings"], [k["name"] for k in result["knobs"]]
    best = result["best"]
    budget = f"{s['max_minutes']:g} min budget" if s["max_minutes"] else "no time budget"
    lines = [f"### segcli tune: {s['model']} on {Path(s['data_dir']).name}", "",
             f"{s['algorithm']} search (KerasTuner), {len(result['rows'])}/{s['trials']} trials, {budget}, "
             f"{result['minutes']:.1f} min in all" + ("; stopped by the time budget" if result["stopped_by_budget"]
                                                      else "") + ("" if result["finished"] else "; not finished"),
             "", "| trial | " + " | ".join(knobs + list(TABLE_COLUMNS)) + " |",
             "|---|" + "---|" * len(knobs) + "---:|" * len(TABLE_COLUMNS)]
    for row in result["rows"]:
        name = f"**{row['trial']}**" if best and row["trial"] == best["trial"] else row["trial"]
        status = "" if row["status"] == "completed" else f" ({row['status']})"
        lines.append(f"| {name}{status} | " + " | ".join(table_cells(row, knobs)) + " |")
    lines += ["", "val mIoU and pixel accuracy: best.keras of each trial evaluated on the val split (void ignored); "
              "minutes: the whole trial (training and evaluation)."]
    if best:
        lines += ["", f"Best: {best['trial']}; its recipe: best-recipe.toml (`segcli train {s['model']} DATA_DIR "
                  f"--recipe {Path(result['out']) / 'best-recipe.toml'}`)."]
    return "\n".join(lines) + "\n"


def plot_tune(result: dict, path: Path, most: int = 4) -> None:
    """val mIoU against each of the first `most` knobs (log axis for log ranges), the best trial marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    knobs = result["knobs"][:most]
    rows = [r for r in result["rows"] if r["val_miou"] is not None]
    best = result["best"]
    fig, axes = plt.subplots(1, len(knobs), figsize=(4.2 * len(knobs), 3.6), squeeze=False)
    for ax, knob in zip(axes[0], knobs):
        name = knob["name"]
        xs = [r["knobs"].get(name) for r in rows]
        ys = [100 * r["val_miou"] for r in rows]
        if "choices" in knob:
            labels = [_shown(c) for c in knob["choices"]]
            xs = [labels.index(_shown(x)) if _shown(x) in labels else -1 for x in xs]
            ax.set_xticks(range(len(labels)), labels)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        elif knob.get("log"):
            ax.set_xscale("log")
        ax.scatter(xs, ys, color="C0")
        if best is not None:
            bx = best["knobs"].get(name)
            ax.scatter([labels.index(_shown(bx)) if "choices" in knob else bx], [100 * best["val_miou"]],
                       color="C3", s=80, marker="*", label="best", zorder=3)
            ax.legend(fontsize=8)
        ax.set_xlabel(name)
        ax.set_ylabel("val mIoU (%)")
        ax.grid(alpha=0.3)
    s = result["settings"]
    fig.suptitle(f"segcli tune: {s['model']}, {s['algorithm']} search, {len(rows)} trials", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


__all__ = ["tune", "parse_tune_table", "Knob", "TuneInterrupted", "keras_tuner", "ALGORITHMS", "INSTALL_HINT",
           "table_cells", "TABLE_COLUMNS", "trial_rows", "to_markdown"]
