"""`train`: recipe + data folder -> a run folder with models, metrics, history and plots.

The run folder and what a kill leaves: segcli.runfolder. `--resume` loses at most the unfinished epoch,
whatever moment the kill came at; it also removes a killed writer's leftovers.

The final evaluation of best.keras is not run here (training does not import segcli.evaluation): a caller
passes it in as `evaluate_best` (segcli.runs.train_and_evaluate does), and it is written into metrics.json
before the run is marked finished.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import keras

from segcli import recipe as recipes
from segcli.backend import set_seed
from segcli.backend import version as backend_version
from segcli.files import LOCK_NAME, TMP_TAG
from segcli.data import Augment, ClassMap, check_dataset, make_pipeline, open_dataset
from segcli.errors import SegcliError, first_line
from segcli.modelfile import save_model
from segcli.models import build_model, count_params, encoder_of, gflops, output_stride, set_encoder_trainable
from segcli.precision import policy, resolve_precision
from segcli.progress import NullProgress, Progress
from segcli.recipe import Recipe
from segcli.runfolder import RunFolder, read_history
from segcli.system import hardware_summary, peak_rss_mb
from segcli.training.budget import check_training_fits
from segcli.training.callbacks import (AveragedWeights, CtrlC, PerClassIoU, ProgressCallback, RunBackup, SaveBest,
                                      Throughput, TimeBudget)
from segcli.training.aux import with_aux_head
from segcli.training.compile import compile_for_training
from segcli.training.distribute import (any_process, leave_distribution, peer_lost, resolve_strategy,
                                        wait_for_all)
from segcli.training.losses import CLASS_WEIGHTINGS, median_frequency_weights
from segcli.training.plots import plot_curves

# evaluate_best(run folder, data folder, the dataset's classes) -> metrics.json's "evaluation" part
Evaluator = Callable[[RunFolder, Path, ClassMap], dict]


class TrainingInterrupted(SegcliError):
    """Ctrl-C during training: the last finished epoch is backed up and `--resume` continues."""

    exit_code = 130

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        super().__init__(f"training interrupted; continue with: segcli train --resume {run_dir}")


class PeerLost(SegcliError):
    """Another process of a several-process training died or stopped: this one stops too; --resume continues."""

    exit_code = 1

    def __init__(self, run_dir, exc: BaseException):
        self.run_dir = run_dir
        super().__init__(f"another process of this training stopped ({first_line(str(exc))[:200]}); the run folder "
                         f"keeps every finished epoch: start `segcli train --resume {run_dir}` on every host")


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict
    history: list[dict] = field(default_factory=list)
    process_index: int = 0  # several processes: this one's place; only process 0 wrote run_dir
    process_count: int = 1


def _class_weights(setting: str, report, num_classes: int):
    if setting in ("none", "", None):
        return None
    if setting in CLASS_WEIGHTINGS:
        shares = list(report.pixel_share) + [report.void_share]  # the void share is used only with void_as_class
        return median_frequency_weights(shares[:num_classes], CLASS_WEIGHTINGS[setting])
    path = Path(setting)
    if not path.exists():
        names = ", ".join(("none", *CLASS_WEIGHTINGS))
        raise SegcliError(f"class_weights is {setting!r}: neither one of {names} nor a file")
    try:
        weights = [float(w) for w in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError) as exc:
        raise SegcliError(f"class weights file must be a JSON list of numbers ({exc})", path) from None
    if len(weights) != num_classes:
        raise SegcliError(f"class weights file has {len(weights)} values for {num_classes} classes", path)
    return weights


RESUME_CONFLICTS = {"model_name": "MODEL", "data_dir": "DATA_DIR", "recipe_file": "--recipe", "out": "--out",
                    "force": "--force", "classes_file": "--classes"}


def _check_resume_args(given: dict, overrides: dict | None) -> None:
    """--resume continues a run exactly as its recipe.toml says: anything that would change it is refused."""
    names = [flag for key, flag in RESUME_CONFLICTS.items() if given.get(key)]
    given_keys = [(key, value) for section in (overrides or {}).values() if isinstance(section, dict)
                  for key, value in section.items() if value is not None]
    given_keys = [item for key, value in given_keys  # [model.options] flags (--encoder) by their own names
                  for item in (value.items() if key == "options" and isinstance(value, dict) else [(key, value)])]
    names += [f"--{key.replace('_', '-')}" for key, value in given_keys if value is not None]
    if names:
        raise SegcliError(f"--resume continues a run with its own recipe.toml and cannot take {', '.join(names)}; "
                          "to train with other settings, start a new run (--out)")


def _pipelines(dataset, recipe: Recipe, stride: int, placement):
    """(train_from, steps per epoch, val or None): input pipelines (segcli.data.make_pipeline: tf.data on
    TensorFlow, else NumPy + OpenCV); val images whole, padded to the output stride. With several processes each
    reads its own slice of every global batch.

    train_from(first_batch) is the training stream from its batch `first_batch` on, one per fit: it repeats, so
    within a fit one iterator lives through all epochs (its prefetching carries on across epoch ends and
    validation), and each fit (a resumed run; the phases of a frozen encoder) picks up at the batch where the
    epochs before it left the stream: every epoch sees the batches it would see in a run never stopped."""
    data, batch, seed = recipe.data, recipe.train.batch_size, recipe.train.seed
    replicas, shard = placement.num_replicas_in_sync, (placement.process_index, placement.process_count)
    crop = data.size
    if any(c % stride for c in crop):
        raise SegcliError(f"training size {crop[0]}x{crop[1]} (--size, [data] size) must divide by the model's "
                          f"output stride {stride}")
    cache = "auto" if data.cache is None else data.cache
    aug = Augment(scale=data.scale, short_side=data.short_side or None, crop=crop, center_crop=data.center_crop,
                  flip=data.flip)
    steps = len(dataset.splits["train"]) // batch
    if steps == 0:
        raise SegcliError(f"batch size {batch} (--batch-size, [train] batch_size) is larger than the "
                          f"{len(dataset.splits['train'])} training pairs")

    def train_from(first_batch: int):
        return make_pipeline(dataset.splits["train"], dataset.classes, dataset.encoding, batch_size=batch,
                             training=True, augment=aug, seed=seed, cache=cache, void_as_class=data.void_as_class,
                             repeat=True, shard=shard, start=first_batch, label_mapping=dataset.label_mapping)

    val_pairs = dataset.splits.get("val") or []
    if not val_pairs:
        return train_from, steps, None
    val_batch = replicas * (batch // replicas if data.eval_crop else 1) or replicas
    if replicas > 1:  # every replica needs a non-empty batch: repeat the first few pairs to fill the last one
        val_pairs = val_pairs + val_pairs[:(-len(val_pairs)) % val_batch]
    val_ds = make_pipeline(val_pairs, dataset.classes, dataset.encoding, batch_size=val_batch, training=False,
                           crop=data.eval_crop or None, pad_to_multiple=stride,
                           eval_short_side=data.eval_short_side or None, cache=cache,
                           void_as_class=data.void_as_class, shard=shard, label_mapping=dataset.label_mapping)
    return train_from, steps, val_ds


def _phases(model, train_spec) -> list[tuple[int, int, bool | None]]:
    """(first epoch, end epoch, encoder trainable) per fit: with freeze_encoder_epochs N and a pretrained encoder,
    [0, N) frozen then [N, epochs) all trainable; else one fit of everything (None: nothing to change)."""
    epochs, frozen = train_spec.epochs, min(train_spec.freeze_encoder_epochs, train_spec.epochs)
    if not frozen or encoder_of(model) is None:
        return [(0, epochs, None)]
    return [(0, frozen, False)] + ([(frozen, epochs, True)] if frozen < epochs else [])


def _summary(model, recipe: Recipe, run: RunFolder, run_info: dict, best: SaveBest, budget: TimeBudget, dataset,
             classes: ClassMap, evaluation: dict | None) -> dict:
    """metrics.json: figures of the last epoch, speed (epochs after the first), best epoch, final evaluation."""
    history = run.history()
    last = history[-1] if history else {}
    rates = [_float(row.get("images_per_sec")) for row in history[1:] or history]
    rates = [r for r in rates if math.isfinite(r)]
    crop = list(recipe.data.size)
    return {
        "model": recipe.model.name, "params": count_params(model), "gflops_per_image": gflops(model, *crop),
        "gflops_size": crop, "epochs": len(history), "epochs_planned": recipe.train.epochs,
        "stopped_by_time_budget": budget.stopped_early,
        "train_images_per_sec": sum(rates) / len(rates) if rates else math.nan,
        "train_seconds": sum(_float(row.get("train_seconds")) for row in history),
        "val": {
            "pixel_accuracy": _float(last.get("val_pixel_accuracy")), "miou": _float(last.get("val_miou")),
            "iou": {name: _float(last.get(f"val_iou_{name}")) for name in dataset.classes.names},
        },
        "evaluation": evaluation,
        "best_epoch": best.best_epoch, "best_val_miou": None if best.best_epoch is None else best.best,
        "precision": run_info["precision"], "strategy": run_info["strategy"], "hardware": run_info["hardware"],
        "backend": run_info.get("backend"), "peak_rss_mb": peak_rss_mb(), "classes": list(classes.names),
    }


def train(model_name: str | None, data_dir: str | Path | None, *, recipe_file=None, overrides: dict | None = None,
          out=None, resume=None, force: bool = False, classes_file=None, progress: Progress | None = None,
          evaluate_best: Evaluator | None = None) -> TrainResult:
    """Train one model; returns the run folder and its final metrics. Raises TrainingInterrupted on Ctrl-C.

    The recipe: defaults < recipe_file (a path or a shipped recipe's name) < overrides (the flags, as text;
    see segcli.recipe.resolve); with resume, the run's own recipe.toml. evaluate_best: the final evaluation
    of best.keras, when the data has a val split (segcli.runs.train_and_evaluate passes segcli.evaluation's);
    None leaves metrics.json's "evaluation" empty. progress: what is happening is reported there (notes, the run
    folder, a task per epoch and the epoch's figures; segcli.progress); by default nothing is."""
    progress = progress or NullProgress()
    run = None
    if resume is not None:
        _check_resume_args({"model_name": model_name, "data_dir": data_dir, "recipe_file": recipe_file, "out": out,
                            "force": force, "classes_file": classes_file}, overrides)
        run = RunFolder(resume)
        recipe, data_dir, classes_file = run.resume_state()
    elif data_dir is None:
        raise SegcliError("DATA_DIR is required (or --resume RUN_DIR)")
    else:
        recipe, note = recipes.resolve_for_model(model_name, recipe_file, overrides)
        if note:
            progress.note(note)
        RunFolder.check_new(out, force, data_dir)  # before any work: a folder that may not be replaced is refused now
    train_spec = recipe.train
    set_seed(train_spec.seed)  # the same on every process: the same weights, shuffles and augmentations
    # Where it trains; with several processes they join here (before any array exists). Only process 0 writes the
    # run folder and reports: the others train the same steps into a scratch copy (the same saves, which are
    # collectives under DataParallel), and a resume reads the run folder on every process (a shared filesystem).
    strategy, strategy_desc = resolve_strategy(train_spec.distribute)
    scratch = None
    if strategy.process_count > 1 and out is None and run is None:
        raise SegcliError("training in several processes needs --out RUN_DIR, the same folder on every process")
    run_dir = run.path if run is not None else Path(out) if out is not None else None  # process 0's
    if not strategy.is_chief:
        scratch = Path(tempfile.mkdtemp(prefix=f"segcli-process{strategy.process_index}-"))
        progress = NullProgress()
        if run is not None:
            shutil.copytree(run.path, scratch / "run", ignore=shutil.ignore_patterns(f"*{TMP_TAG}*", "logs", LOCK_NAME))
            run = RunFolder(scratch / "run")
        else:
            out, force = scratch / "run", False
    if strategy.process_count > 1:
        # process 0 alone evaluating best.keras would keep the others waiting in a collective for minutes
        evaluate_best = None
        progress.note("several processes: evaluate best.keras afterwards with `segcli evaluate`")
    if strategy.distribution is not None and train_spec.batch_size % strategy.num_replicas_in_sync:
        raise SegcliError(f"batch size {train_spec.batch_size} (the global batch) must divide by the "
                          f"{strategy.num_replicas_in_sync} devices it is spread over")
    try:
        result = _train(model_name, data_dir, recipe, run, out, force, classes_file, progress, evaluate_best, strategy,
                        strategy_desc)
    except TrainingInterrupted:
        if scratch is None:
            raise
        raise TrainingInterrupted(run_dir) from None  # the folder to resume is process 0's
    except Exception as exc:
        if peer_lost(strategy, exc):
            raise PeerLost(run_dir, exc) from None
        raise
    else:
        if scratch is not None:
            result = TrainResult(run_dir, result.metrics, result.history, strategy.process_index, strategy.process_count)
        return result
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _train(model_name, data_dir, recipe: Recipe, run: RunFolder | None, out, force: bool, classes_file,
           progress: Progress, evaluate_best: Evaluator | None, strategy, strategy_desc: str) -> TrainResult:
    data_spec, train_spec, model_spec = recipe.data, recipe.train, recipe.model

    dataset = open_dataset(data_dir, classes=classes_file or data_spec.classes or None,
                           val_fraction=0.0 if "val" in data_spec.train_splits else data_spec.val_fraction,
                           seed=train_spec.seed,
                           palette_by_colour=data_spec.palette_by_colour)
    report = check_dataset(dataset)
    for notice in report.notices:
        progress.note(notice)
    if not report.ok:
        first = report.problems[0]
        raise SegcliError(f"{len(report.problems)} problem(s) in the dataset, first: {first.path}: {first.problem} "
                          f"(see `segcli data check {data_dir}`)", data_dir)
    if not dataset.splits.get("train"):
        raise SegcliError("no training pairs found", data_dir)
    if "val" in data_spec.train_splits:  # the model to ship: trained on val too, for a fixed number of epochs
        dataset.splits["train"] = dataset.splits["train"] + dataset.splits.pop("val", [])
        progress.note("train_splits includes val: this run trains on val too, so it reports no val score; "
                      "model.keras (= best.keras) is the last epoch's")
    classes = dataset.classes.with_void_as_class() if data_spec.void_as_class else dataset.classes

    # before the model is built and a run folder made: a size, batch or model knob that cannot fit is one line
    check_training_fits(model_spec.name, classes.num_classes, model_spec.options, data_spec.size, train_spec.batch_size)
    precision, why = resolve_precision(train_spec.precision)
    aux = bool(train_spec.aux_weight)
    with strategy.scope(), policy(precision):
        model = build_model(model_spec.name, classes.num_classes, **model_spec.options)
        # what fit trains: the model, or the model with an auxiliary head (its weights shared); `model` is saved
        trained = with_aux_head(model, classes.num_classes, train_spec.aux_stride) if aux else model
    train_from, steps, val_ds = _pipelines(dataset, recipe, output_stride(model), strategy)
    weights = _class_weights(train_spec.class_weights, report, classes.num_classes)
    compiled = compile_for_training(trained, recipe, classes, steps, class_weights=weights, strategy=strategy, aux=aux)
    # Freezing the encoder: ONE optimizer, built over all variables by compile_for_training, serves every phase
    # (re-compiled with it), so the step count (the lr schedule), the decoder's moments and the backup's optimizer
    # state carry across the switch, and a resume in either phase restores the same variables. The encoder's own
    # moments start at zero when it is unfrozen (Adam then steps it a little more than lr for its first updates).
    phases = _phases(model, train_spec)

    new_run = run is None
    if new_run:
        run = RunFolder.create(out, model_spec.name, force, data_dir)
    run_dir = run.path
    with run.lock():  # a second `train --resume` or `--force` on this folder is refused meanwhile
        if new_run:
            run.save_recipe(recipe)
            classes.save(run.classes_path)
        run_info = {
            "data_dir": str(Path(data_dir).resolve()), "model": model_spec.name, "precision": precision,
            "precision_reason": why, "backend": backend_version(), "strategy": strategy_desc, "replicas": strategy.num_replicas_in_sync,
            "jit": compiled.jit, "steps_per_execution": compiled.steps_per_execution, "hardware": hardware_summary(),
            "layout": dataset.layout, "encoding": dataset.encoding, "dataset_classes": dataset.classes.to_dict(),
            "train_pairs": len(dataset.splits["train"]), "val_pairs": len(dataset.splits.get("val") or []),
            "started": dt.datetime.now().isoformat(timespec="seconds"),
        }
        run.write_info(run_info)
        # dataset_classes: how the masks read (evaluate uses them on a data folder without a classes file)
        meta = {"recipe": recipe.to_dict(), "precision": precision, "model_name": model_spec.name,
                "dataset_classes": run_info["dataset_classes"]}

        def too_short(fit, planned, seconds):  # said after the second epoch, not when the budget ends the run
            later = [str(e) for e in train_spec.step_epochs if e >= fit]  # step_epochs: fixed, whatever the epochs
            if train_spec.schedule == "step" and train_spec.step_epochs:
                ends = f"before the learning-rate steps at epoch {', '.join(later)}" if later else "there"
            elif train_spec.schedule == "constant":
                ends = "there"
            else:
                ends = "before its learning-rate schedule ends" + (
                    f" (--epochs {fit} fits the schedule to the time)" if new_run else "")
            progress.note(f"at {seconds:.0f} s an epoch, max_minutes {train_spec.max_minutes:g} fits about {fit} of the "
                          f"{planned} planned epochs: training will stop {ends}")

        budget = TimeBudget(train_spec.max_minutes, train_spec.epochs, too_short=too_short,
                            agree=lambda stop: any_process(strategy, stop))  # one decision for every process
        averaged = AveragedWeights() if train_spec.ema_momentum else None  # validated and saved: the average
        if averaged:
            averaged.set_model(trained)  # (fit sets it too; a resume with nothing left to train runs no fit)

        def saved_weights():  # what the model files hold: the weights' average when one is kept
            return averaged.averaged() if averaged else contextlib.nullcontext()

        def save_best(_):  # `model`, not the trained one: an auxiliary head stays out of the file
            with saved_weights():
                save_model(model, run.best_path, classes, meta)

        best = SaveBest(save_best, monitor="val_miou")
        backup = RunBackup(run.backup_dir, run.history_path, best, budget)  # resuming: the best so far, the budget
        # order matters: the backup records the logs the callbacks before it add, and the best model it saved
        per_class = PerClassIoU(compiled.metrics[1], dataset.classes.names)
        ctrl_c = CtrlC(lambda: progress.message("stopping at the end of this step (Ctrl-C again to stop now)"))
        # (last: an epoch that ended before Ctrl-C was checked is backed up and reported)
        callbacks = [Throughput(train_spec.batch_size), per_class, budget, best, backup,
                     ProgressCallback(progress, train_spec.epochs), ctrl_c]
        if averaged:
            callbacks.insert(0, averaged)
        if keras.backend.backend() == "tensorflow":  # Keras' TensorBoard callback writes through tf.summary
            callbacks.insert(-1, keras.callbacks.TensorBoard(str(run.logs_dir), write_graph=False, profile_batch=0))
        progress.message(f"run folder: {run_dir}\nmodel {model_spec.name} ({count_params(model):,} parameters), "
                         f"{run_info['backend']}, precision {precision} ({why}), {strategy_desc}, {run_info['train_pairs']} train / "
                         f"{run_info['val_pairs']} val pairs, batch {train_spec.batch_size}, {steps} steps/epoch")
        try:
            backup.restore(trained)  # resuming: weights, optimizer state and history of the last finished epoch
            for first, end, encoder_trainable in phases:
                start = max(first, backup.epochs_done)
                if start >= end or budget.stopped:  # a resume past this phase; or out of time
                    continue
                if encoder_trainable is not None:  # the encoder frozen (its BN in inference mode) or unfrozen
                    set_encoder_trainable(model, encoder_trainable)
                    compiled = compile_for_training(trained, recipe, classes, steps, class_weights=weights,
                                                    strategy=strategy, optimizer=trained.optimizer, aux=aux)
                    per_class.metric = compiled.metrics[1]
                    progress.note(f"epochs {first + 1}-{end}: encoder "
                                  f"{'trainable' if encoder_trainable else 'frozen (decoder only)'}")
                # Keras reads whole calls of steps_per_execution batches: an epoch takes `steps` rounded up to them
                batches = -(-steps // compiled.steps_per_execution) * compiled.steps_per_execution
                with ctrl_c:
                    trained.fit(train_from(start * batches), steps_per_epoch=steps, validation_data=val_ds,
                                epochs=end, initial_epoch=start, verbose=0, callbacks=callbacks,
                                shuffle=False)  # the pipeline shuffles
            set_encoder_trainable(model, True)  # the saved model.keras fine-tunes like any other

            # The final files; backup/ stays until they all exist, so a kill here is resumed without retraining.
            with saved_weights():
                save_model(model, run.model_path, classes, meta)
                if best.best_epoch is None:  # no validation data: the last model is the best we know
                    save_model(model, run.best_path, classes, meta)
            leave_distribution(strategy)  # the evaluation below runs on process 0 alone
            evaluation = None
            if evaluate_best is not None and dataset.splits.get("val"):
                progress.message("evaluating best.keras on val (full size, and the tutorial's protocol) ...")
                evaluation = evaluate_best(run, Path(run_info["data_dir"]), dataset.classes)
            metrics_out = _summary(model, recipe, run, run_info, best, budget, dataset, classes, evaluation)
            run.write_metrics(metrics_out)
            history = run.history()
            if history:
                plot_curves(history, run.curves_path, title=f"{model_spec.name} on {Path(data_dir).name}")
            run.finish(run_info)  # run.json marked finished, then backup/ removed: the order a kill may stop at
            wait_for_all(strategy, "segcli train finished")  # the others wait for process 0's evaluation and files
        except KeyboardInterrupt:  # during an epoch, or while the final files are written: --resume continues
            raise TrainingInterrupted(run_dir) from None
        except Exception as exc:
            if not _out_of_memory(exc):
                raise
            if new_run and backup.epochs_done == 0:
                run.remove()  # nothing trained: leave no half-made run folder behind
            raise SegcliError(f"out of memory training {model_spec.name} at {'x'.join(map(str, recipe.data.size))}, "
                              f"batch {train_spec.batch_size}: use a smaller --size or --batch-size") from None
        return TrainResult(run_dir=run_dir, metrics=metrics_out, history=history)


def _out_of_memory(exc: BaseException) -> bool:
    """TensorFlow's ResourceExhaustedError, XLA's RESOURCE_EXHAUSTED (JAX), torch's OutOfMemoryError or its CPU
    allocator's failure."""
    text = str(exc)
    return (type(exc).__name__ in ("ResourceExhaustedError", "OutOfMemoryError")
            or "RESOURCE_EXHAUSTED" in text or "can't allocate memory" in text)


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


__all__ = ["train", "TrainResult", "TrainingInterrupted", "Evaluator", "read_history"]
