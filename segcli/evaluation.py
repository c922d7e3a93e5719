"""`evaluate`: a model over a dataset split at full size -> confusion matrix, pixel accuracy, IoU per class.

The benchmark figures (pixel accuracy, mIoU, per-class IoU and accuracy) count only labelled pixels: the
ignore ("void") label is left out. Beside them comes *the tutorial's figure*, labelled as such: pixel
accuracy with void counted as a class (a model without a void class gets every void pixel wrong), on
368x480 centre crops after resizing the short side to 400, the protocol of the tutorial this tool follows.
The scoring rules (ignore label, a void class predicted but not scored) are segcli.scoring's.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from segcli.data import ClassMap, data_folders, load_labels, open_dataset, read_image
from segcli.errors import DataError, SegcliError
from segcli.files import (atomic_path, check_writable_dir, ensure_writable_dir, guard_output, missing_folders,
                          remove_empty_folders, remove_stale_temporaries, write_json, write_text)
from segcli.inference import iter_predictions, parse_tta
from segcli.progress import NullProgress, Progress
from segcli.recipe import held_out
from segcli.scoring import confusion_counts, scores_from_confusion

TUTORIAL_SHORT_SIDE = 400
TUTORIAL_CROP = (368, 480)
TUTORIAL_LABEL = ("the tutorial's figure: pixel accuracy with void counted as a class, "
                  f"on {TUTORIAL_CROP[0]}x{TUTORIAL_CROP[1]} centre crops after resizing the short side "
                  f"to {TUTORIAL_SHORT_SIDE}")


def match_classes(model_classes: ClassMap, data_classes: ClassMap, model_path=None) -> bool:
    """True when the model has an extra void class (K + 1 outputs); SegcliError when K does not fit."""
    km, kd = model_classes.num_classes, data_classes.num_classes
    if km == kd:
        return False
    if km == kd + 1:
        return True
    raise SegcliError(f"the model predicts {km} classes but the dataset has {kd} ({_names(data_classes)}); "
                      f"a model for it needs {kd} outputs, or {kd + 1} with void as a class. Pass --classes FILE "
                      "if the dataset's classes file is not the one the model was trained with", model_path)


def _names(classes: ClassMap, limit: int = 6) -> str:
    names = list(classes.names)
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _tutorial_figure(loaded, dataset, pairs, batch_size: int, void_model: bool, tta=None) -> dict:
    """Void counted: void pixels are class K in the truth; only a model with a void class can get them right."""
    from segcli.data import make_pipeline
    from segcli.inference import predict_batch

    kd = dataset.classes.num_classes
    pad_label = dataset.classes.with_void_as_class().ignore_index
    ds = make_pipeline(pairs, dataset.classes, dataset.encoding, batch_size=batch_size, training=False,
                       crop=TUTORIAL_CROP, eval_short_side=TUTORIAL_SHORT_SIDE, pad_to_multiple=loaded.output_stride,
                       cache=False, void_as_class=True, label_mapping=dataset.label_mapping)
    correct = counted = void = 0
    for images, labels in ds:
        images, labels = np.asarray(images), np.asarray(labels)
        pred = predict_batch(loaded.model, images, stride=loaded.output_stride, tta=tta).argmax(axis=-1)
        scored = labels != pad_label
        counted += int(scored.sum())
        void += int((labels == kd).sum())
        correct += int(((pred == labels) & scored).sum())
    return {
        "pixel_accuracy_void_counted": correct / max(counted, 1),
        "pixels": counted,
        "void_pixels": void,
        "model_has_void_class": void_model,
        "short_side": TUTORIAL_SHORT_SIDE,
        "crop": list(TUTORIAL_CROP),
        "label": TUTORIAL_LABEL,
        "tta": None if tta is None else str(tta),
    }


def evaluate(loaded, data_dir: str | Path, split: str = "val", *, classes_file: str | Path | None = None,
             batch_size: int = 4, tutorial: bool = True, out_dir: str | Path | None = None, tile: int = 1024,
             overlap: int = 128, tta=None, progress: Progress | None = None, palette_by_colour: bool | None = None) -> dict:
    """Run `loaded` (a modelfile.LoadedModel) over `split` of the dataset at `data_dir` and score it.

    Images run at full size (padded to the output stride and cropped back; tiled past `tile` pixels).
    Returns a dict with pixel_accuracy, miou, per_class [{name, iou, accuracy, pixels}], confusion (rows =
    truth), pixels, ignored_pixels and `tutorial` (see TUTORIAL_LABEL; None with tutorial=False).
    With `out_dir`: confusion.csv, confusion.png (row-normalised) and evaluation.json there.
    `tta` (segcli.inference.parse_tta: "flip", "flip,0.75,1.25", ...): predictions (the tutorial's figure's
    too) from the mean softmax probabilities over its passes; the result's "tta" records it (None: none).
    `progress` (segcli.progress) gets a task "evaluate SPLIT" (images done), then "evaluate tutorial".
    `palette_by_colour`: palette masks map their entries to classes by colour (open_dataset); None: as the model
    was trained (its recipe's data option palette_by_colour).
    """
    if batch_size < 1:
        raise SegcliError(f"batch size must be >= 1, got {batch_size}")
    tta = parse_tta(tta)
    if out_dir is not None:
        guard_output(out_dir, data_folders(data_dir))  # not among the data (a dataset file's root), links too
        check_writable_dir(out_dir)  # before the work: a folder that cannot take the reports fails now
    val_fraction, seed = held_out(loaded.meta.get("recipe"))  # the split the model was trained with
    if palette_by_colour is None:  # the masks read as in training
        palette_by_colour = bool(((loaded.meta.get("recipe") or {}).get("data") or {}).get("palette_by_colour"))
    trained_on = loaded.meta.get("dataset_classes")  # no classes file: the masks read as in training
    dataset = open_dataset(data_dir, classes=classes_file, val_fraction=val_fraction, seed=seed,
                           fallback_classes=ClassMap.from_dict(trained_on) if trained_on else None,
                           palette_by_colour=palette_by_colour)
    if dataset.classes_source == "fallback":
        dataset.notices.append("no classes file: the classes the model was trained with (void: "
                               f"label {dataset.classes.ignore_index}); --classes FILE sets others")
    if not dataset.splits.get(split):
        raise SegcliError(f"no {split!r} split in this dataset (found: {', '.join(dataset.splits) or 'none'})",
                          data_dir)
    pairs = dataset.splits[split]
    void_model = match_classes(loaded.classes, dataset.classes, loaded.path)
    data_classes = dataset.classes
    km, kd, ignore = loaded.classes.num_classes, data_classes.num_classes, data_classes.ignore_index
    notes = list(dataset.notices)
    if tuple(loaded.classes.names[:kd]) != data_classes.names:
        notes.append(f"class names differ: model {_names(loaded.classes)}; dataset {_names(data_classes)} "
                     "(scored by index)")

    def items():
        for pair in pairs:
            image = read_image(pair.image)
            truth = load_labels(pair, dataset.encoding, data_classes, dataset.label_mapping, image.shape[:2])
            if truth.shape != image.shape[:2]:
                raise DataError(f"mask is {truth.shape[0]}x{truth.shape[1]} but its image {pair.image.name} is "
                                f"{image.shape[0]}x{image.shape[1]}", pair.mask)
            yield (pair, truth), image

    cm = np.zeros((km, km), np.int64)
    ignored = done = 0
    progress = progress or NullProgress()
    progress.start(f"evaluate {split}", len(pairs))
    try:
        for (pair, truth), _image, pred, _ in iter_predictions(loaded.model, items(), stride=loaded.output_stride,
                                                                tile=tile, overlap=overlap, batch_size=batch_size,
                                                                tta=tta):
            cm += confusion_counts(truth, pred, km, ignore)
            ignored += int(((truth == ignore) | (truth >= kd)).sum())
            done += 1
            progress.advance(f"evaluate {split}", done)
    finally:
        progress.end(f"evaluate {split}")

    scores = scores_from_confusion(cm, kd)  # a void output class: wrong predictions, not a scored class
    truth_pixels = cm.sum(axis=1)
    result = {
        "model": str(loaded.path) if loaded.path else None,
        "data_dir": str(data_dir),
        "split": split,
        "images": len(pairs),
        "classes": list(data_classes.names),
        "model_classes": list(loaded.classes.names),
        "ignore_index": ignore,
        "tta": None if tta is None else str(tta),
        "tta_passes": 1 if tta is None else len(tta.passes),
        "pixel_accuracy": scores["pixel_accuracy"],
        "miou": scores["miou"],
        "per_class": [{"name": name, "iou": scores["iou"][i], "accuracy": scores["class_accuracy"][i],
                       "pixels": int(truth_pixels[i])} for i, name in enumerate(data_classes.names)],
        "pixels": int(cm.sum()),
        "ignored_pixels": ignored,
        "confusion": cm.tolist(),
        "confusion_labels": list(loaded.classes.names),
        "tutorial": None,
        "notes": notes,
    }
    if tutorial:
        progress.start("evaluate tutorial", 1)
        try:
            result["tutorial"] = _tutorial_figure(loaded, dataset, pairs, batch_size, void_model, tta)
            progress.advance("evaluate tutorial", 1)
        finally:
            progress.end("evaluate tutorial")
    if out_dir is not None:
        result["outputs"] = write_reports(result, out_dir)
    return result


def write_reports(result: dict, out_dir: str | Path) -> dict:
    """confusion.csv, confusion.png and evaluation.json in out_dir; returns their paths. A failure (a full disk)
    leaves no report of this call, nor the folder when this call made it."""
    out_dir = Path(out_dir)
    made = missing_folders(out_dir)
    out_dir = ensure_writable_dir(out_dir)
    paths = {"confusion_csv": str(out_dir / "confusion.csv"), "confusion_png": str(out_dir / "confusion.png"),
             "json": str(out_dir / "evaluation.json")}
    existed = {path for path in paths.values() if Path(path).exists()}
    try:
        _write_reports(result, paths)
    except BaseException:
        for path in paths.values():
            if path not in existed:  # ours, whole (atomic_path leaves no half file): a report set is all or none
                Path(path).unlink(missing_ok=True)
        remove_empty_folders(made)
        raise
    return paths


def _write_reports(result: dict, paths: dict) -> None:
    names = result["confusion_labels"]
    cm = np.asarray(result["confusion"], np.int64)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["truth \\ prediction", *names])
    for name, row in zip(names, cm.tolist()):
        writer.writerow([name, *row])
    remove_stale_temporaries(*paths.values())  # what a killed evaluate left for these reports
    write_text(paths["confusion_csv"], buf.getvalue())
    plot_confusion(cm, names, paths["confusion_png"],
                   title=f"{Path(result['model'] or 'model').name} on {result['split']}"
                         f"{' (TTA ' + result['tta'] + ')' if result.get('tta') else ''}: "
                         f"mIoU {100 * result['miou']:.1f}%, pixel acc. {100 * result['pixel_accuracy']:.1f}%")
    write_json(paths["json"], {**result, "outputs": paths})


def plot_confusion(cm: np.ndarray, names, path: str | Path, title: str = "") -> None:
    """Row-normalised heat map (each truth row sums to 1), written atomically as PNG."""
    from matplotlib.figure import Figure  # no pyplot: renders with Agg, touches no global backend state

    cm = np.asarray(cm, np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(names)
    size = max(4.0, 0.45 * k + 2.5)
    fig = Figure(figsize=(size + 1.0, size))
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    if title:
        ax.set_title(title, fontsize=9)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if norm[i, j] >= 0.005:
                    ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the truth row")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


__all__ = ["evaluate", "match_classes", "confusion_counts", "write_reports", "plot_confusion",
           "TUTORIAL_LABEL", "TUTORIAL_CROP", "TUTORIAL_SHORT_SIDE"]
