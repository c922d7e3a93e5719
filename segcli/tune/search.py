"""`tune`: search a recipe's knobs with KerasTuner, each trial a `segcli train` run folder, within a time budget;
the tune folder, and `--resume`, which continues a search from it.

KerasTuner does the searching (its RandomSearch, BayesianOptimization and Hyperband oracles) and keeps its state
in OUT/keras-tuner/, from which `--resume` continues; `SegcliTuner.run_trial` trains one trial through
`segcli.runs.train_and_evaluate` (what `segcli train` runs) into OUT/trial-NNN/ and returns the val mIoU of its
best.keras. The time budget: each trial's max_minutes is the budget left divided by the trials left, and no trial
starts once it is spent (a trial trains at least one epoch, so a search can overrun by about one epoch).
The knobs come from segcli.tune.space; what is written after each trial, from segcli.tune.report.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import time
from pathlib import Path

import tomli_w

from segcli import recipe as recipes
from segcli.errors import SegcliError, describe, first_line
from segcli.files import (check_replaceable, ensure_writable_dir, folder_lock, guard_output, mark_segcli_folder,
                          remove_leftovers, write_json, write_text)
from segcli.progress import NullProgress, Progress
from segcli.runfolder import RunFolder
from segcli.scoring import pct
from segcli.tune.report import OBJECTIVE, trial_metric, write_report
from segcli.tune.space import ALGORITHMS, DEFAULT_ALGORITHM, flatten, parse_tune_table, show_value

DEFAULT_TRIALS = 10
INSTALL_HINT = 'KerasTuner is not installed; install it with: pip install "segcli[tune]" (or pip install keras-tuner)'
SEARCH_RECIPE = "search.toml"   # the starting recipe, resolved, with its [tune] table: what every trial starts from
SETTINGS = "search.json"        # model, data, algorithm, trials, budget: what --resume continues with
PROJECT = "keras-tuner"         # KerasTuner's project folder (oracle and trial states)


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
        return budget - sum(trial_metric(t, "minutes") or 0.0 for t in oracle.trials.values())

    def trial_limit(self, oracle) -> float:
        """This trial's max_minutes: the budget left shared by the trials left (and the recipe's own limit)."""
        left = self.budget_left(oracle)
        own = self.base.train.max_minutes
        if left is None:
            return own
        done = sum(1 for t in oracle.trials.values() if t.status in ("COMPLETED", "FAILED"))
        share = max(left, 0.0) / max(self.settings["trials"] - done, 1)
        return min(own, share) if own else share


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
            shown = ", ".join(f"{k} = {show_value(v)}" for k, v in knobs.items())
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
            progress.message(f"tune: {run.path.name}: val mIoU {pct(miou)}, pixel accuracy {pct(accuracy)}, "
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
    if not Path(data_dir).exists():  # a folder, or a file (a dataset file, a CSV)
        raise SegcliError("no such data folder", data_dir)
    path = recipes.find_recipe(recipe_file)
    base, _ = recipes.resolve_for_model(model_name, path)
    tune_table = recipes.read_recipe_file(path).get(recipes.TUNE_TABLE)
    knobs = parse_tune_table(tune_table, base, path, algorithm)
    out = Path(out)
    replace = check_replaceable(out, force, "tune folder", also=", or --resume to continue it", kind="tune")
    from segcli.data import data_folders

    guard_output(out, data_folders(data_dir))  # never inside the data (a dataset file's root), through links too
    ensure_writable_dir(out)
    if replace:
        with folder_lock(out):  # a search running in it is refused, not emptied
            for child in out.iterdir():
                if child.name != ".segcli.lock":
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    mark_segcli_folder(out, "tune")
    flat = {knob.name: space for knob, (_, space) in zip(knobs, flatten(tune_table))}
    settings["knobs"] = list(flat)
    write_text(out / SEARCH_RECIPE, f"# segcli tune: the recipe every trial starts from ({recipe_file}, resolved "
               f"for {model_name}), and the knobs searched\n" + tomli_w.dumps({**base.to_dict(), "tune": flat}))
    write_json(out / SETTINGS, settings)
    return _Search(out, settings)


