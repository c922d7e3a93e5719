"""A run folder, the one object that knows its files: what `train` writes, `--resume` reads back,
`compare` summarises and `evaluate` scores.

Files: model.keras (last), best.keras (best val mIoU), recipe.toml (resolved), classes.json, history.csv,
logs/ (TensorBoard), metrics.json, curves.png, run.json, backup/ (while unfinished), .segcli (the marker
that lets --force replace it), .segcli.lock (while a training writes it).

What a kill leaves: every file is written under a temporary name and renamed, and backup/ holds the last
finished epoch (weights, optimizer, history, best so far) until the final files exist. The end of a run is
ordered so that a kill between any two steps can still be resumed: metrics.json, then run.json gets
"finished", then backup/ is removed (`finish`).

No TensorFlow here: reading a run folder is plain files.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

from segcli.errors import SegcliError
from segcli.files import (MARKER_NAME, TMP_TAG, check_replaceable, ensure_writable_dir, folder_lock, guard_output,
                          mark_segcli_folder, remove_leftovers, segcli_folder_kind, write_json, write_text)

STATE_NAME = "state.json"  # in backup/: the last finished epoch


def read_history(path: str | Path) -> list[dict]:
    """history.csv's rows (text values), [] when there is none."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def history_csv(rows: list[dict]) -> str:
    """history.csv's text: `epoch` first, then the other keys sorted (as Keras' CSVLogger writes it)."""
    keys = sorted({k for row in rows for k in row} - {"epoch"})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["epoch", *keys], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def read_backup_state(backup_dir: str | Path) -> dict | None:
    """The last finished epoch recorded in ``backup_dir`` ({"epoch", "weights", "history", "best", ...}),
    or None when there is none. Only a state file whose weights file exists counts."""
    backup_dir = Path(backup_dir)
    path = backup_dir / STATE_NAME
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
        weights = backup_dir / str(state["weights"])
        int(state["epoch"]), list(state["history"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SegcliError(f"damaged training backup ({exc}); start the run again with --force", path) from None
    if not weights.is_file():
        raise SegcliError(f"training backup names {weights.name}, which is missing; start the run again with "
                          "--force", path)
    return state


def _inside(path: Path, folder: Path) -> bool:
    path, folder = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return path == folder or folder in path.parents


def trained_on(model_path: str | Path) -> Path | None:
    """The dataset folder the run beside ``model_path`` trained on (its run.json's data_dir); None when the
    model is not in a run folder or run.json does not say."""
    try:
        return Path(json.loads((Path(model_path).parent / "run.json").read_text())["data_dir"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class RunFolder:
    """One run folder: its paths, and every way segcli creates, locks, resumes, reads and finishes it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # --- the files it holds ---
    model_path = property(lambda self: self.path / "model.keras")
    best_path = property(lambda self: self.path / "best.keras")
    recipe_path = property(lambda self: self.path / "recipe.toml")
    classes_path = property(lambda self: self.path / "classes.json")
    history_path = property(lambda self: self.path / "history.csv")
    metrics_path = property(lambda self: self.path / "metrics.json")
    curves_path = property(lambda self: self.path / "curves.png")
    info_path = property(lambda self: self.path / "run.json")
    backup_dir = property(lambda self: self.path / "backup")
    logs_dir = property(lambda self: self.path / "logs")

    # --- creating one ---
    @staticmethod
    def check_new(out: str | Path | None, force: bool, data_dir: str | Path | None = None) -> bool:
        """Before any work: may ``out`` become the run folder? True when it holds a run to replace (--force).
        A folder segcli did not make is never replaced, nor one that holds the data."""
        from segcli.data import data_folders

        if out is None:
            return False
        out = Path(out)
        if data_dir is not None and _inside(data_dir, out):
            raise SegcliError(f"is the data folder or holds it ({data_dir}); choose another --out", out)
        guard_output(out, data_folders(data_dir))  # nor inside the data (a dataset file's root), through links too
        replace = check_replaceable(out, force, "run folder", also=", or --resume to continue it", kind="run")
        ensure_writable_dir(out.parent if replace or not out.exists() else out)
        return replace

    @classmethod
    def create(cls, out: str | Path | None, model_name: str, force: bool, data_dir=None) -> RunFolder:
        """A new folder (runs/MODEL-TIMESTAMP when ``out`` is None), marked as segcli's; an existing non-empty
        one only with force and only if it is a segcli run folder (then it is emptied first, under its lock)."""
        if out is None:
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            path = Path("runs") / f"{model_name}-{stamp}"
            n = 1
            while path.exists():
                n += 1
                path = Path("runs") / f"{model_name}-{stamp}-{n}"
        else:
            path = Path(out)
            if cls.check_new(path, force, data_dir):
                with folder_lock(path):  # a folder another training is writing is refused, not emptied
                    for child in path.iterdir():
                        if child.name in (".segcli.lock", MARKER_NAME):  # the mark goes last: a kill leaves it
                            continue
                        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        ensure_writable_dir(path)
        mark_segcli_folder(path, "run")
        return cls(path)

    @contextlib.contextmanager
    def lock(self) -> Iterator[RunFolder]:
        """Hold the folder's lock (a second `train --resume` or `--force` on it is refused meanwhile); a killed
        writer's temporary files are removed first."""
        with folder_lock(self.path):
            remove_leftovers(self.path)
            yield self

    # --- reading ---
    def info(self) -> dict:
        """run.json; a damaged one is a one-line error."""
        try:
            return json.loads(self.info_path.read_text())
        except (OSError, ValueError) as exc:
            raise SegcliError(f"run.json is damaged ({exc})", self.info_path) from None

    def recipe(self):
        """The resolved recipe (segcli.recipe.Recipe) the run trains with."""
        from segcli.recipe import load_resolved

        return load_resolved(self.recipe_path)

    def history(self) -> list[dict]:
        return read_history(self.history_path)

    def backup_state(self) -> dict | None:
        return read_backup_state(self.backup_dir)

    def metrics(self) -> dict:
        """metrics.json of a finished run; a folder without one is a one-line error."""
        if not self.metrics_path.is_file():
            raise SegcliError("not a finished segcli run (no metrics.json)", self.path)
        try:
            return json.loads(self.metrics_path.read_text())
        except (OSError, ValueError) as exc:
            raise SegcliError(f"metrics.json is damaged ({exc})", self.metrics_path) from None

    def model_file(self) -> Path:
        """best.keras, else model.keras: the model to use from a finished run."""
        return self.best_path if self.best_path.is_file() else self.model_path

    def resume_state(self):
        """(resolved recipe, data folder, the dataset's classes as a ClassMap) of a run to resume; a finished
        run, or one with nothing to resume from, is a one-line error (never a fresh start over its models)."""
        from segcli.data import ClassMap

        if not self.path.is_dir():
            raise SegcliError("no such run folder", self.path)
        if not self.recipe_path.is_file() or not self.info_path.is_file():
            raise SegcliError("not a segcli run folder (no recipe.toml / run.json)", self.path)
        try:
            run_info = json.loads(self.info_path.read_text())
            data_dir, dataset_classes = Path(run_info["data_dir"]), run_info["dataset_classes"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SegcliError(f"run.json is damaged ({exc})", self.info_path) from None
        recipe = self.recipe()
        history = self.history()
        if run_info.get("finished"):  # also when a kill left part of backup/ behind while it was being removed
            raise SegcliError(f"this run is finished ({len(history)}/{recipe.train.epochs} epochs); nothing to "
                              "resume. To train longer, start a new run with more --epochs", self.path)
        state = self.backup_state()
        if state is None and self.metrics_path.is_file():
            raise SegcliError(f"this run is finished ({len(history)}/{recipe.train.epochs} epochs); nothing to "
                              "resume. To train longer, start a new run with more --epochs", self.path)
        # No finished epoch yet (killed during the first, or while its backup was written: only temporaries in
        # backup/): resuming starts at epoch 1. A history or a model without a backup is never trained over.
        backup_files = [p for p in self.backup_dir.rglob("*")  # an epoch file no state.json names yet: unusable
                        if TMP_TAG not in p.name and not p.name.startswith("epoch-")]
        if state is None and (history or backup_files or self.model_path.exists()):
            raise SegcliError("no usable training backup (backup/state.json) to resume from; start the run again "
                              "with --force", self.path)
        return recipe, data_dir, ClassMap.from_dict(dataset_classes)

    # --- writing ---
    def save_recipe(self, recipe) -> None:
        from segcli.recipe import save

        save(recipe, self.recipe_path)

    def write_info(self, info: dict) -> None:
        write_json(self.info_path, info)

    def write_history(self, rows: list[dict]) -> None:
        write_text(self.history_path, history_csv(rows))

    def write_metrics(self, metrics: dict) -> None:
        write_json(self.metrics_path, metrics)

    def finish(self, info: dict) -> None:
        """The last two steps of a run, after metrics.json: run.json marked finished, then backup/ removed
        (a kill before the mark resumes from the backup without training; after it the run is complete)."""
        self.write_info({**info, "finished": dt.datetime.now().isoformat(timespec="seconds")})
        if self.backup_dir.exists():  # renamed first, so a kill mid-removal leaves a leftover, not half a backup
            gone = self.path / f".backup{TMP_TAG}removed"
            shutil.rmtree(gone, ignore_errors=True)
            os.replace(self.backup_dir, gone)
            shutil.rmtree(gone, ignore_errors=True)

    def remove(self) -> None:
        """Delete this run folder, for a new run that failed before its first epoch ended (only segcli's files
        are in it: `create` accepts nothing else)."""
        if segcli_folder_kind(self.path) == "run":
            shutil.rmtree(self.path, ignore_errors=True)


__all__ = ["RunFolder", "read_history", "history_csv", "read_backup_state", "STATE_NAME"]
