"""What each command but bench shows when it is done: data check's report, the models' tables, train's summary,
predict's and overlay's lines, evaluate's table, compare's table, export's check, tune's trials; and the lines
that say how to continue an interrupted train or tune.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from segcli.cli.render.consoles import console, err_console
from segcli.scoring import pct


# --- data check -----------------------------------------------------------------------------------

def data_report(report) -> None:
    console.print(Text.assemble((str(report.root), "bold"), ": layout ", (str(report.layout), "cyan"), ", masks ",
                                (str(report.encoding), "cyan"), f", classes {report.classes_source}"), highlight=False)
    for notice in report.notices:
        console.print(Text.assemble(("note:", "yellow"), f" {notice}"), highlight=False)
    console.print("pairs: " + ", ".join(f"{split} {n}" for split, n in report.counts.items())
                  + f"  ({report.seconds:.1f} s)", highlight=False)
    if report.sizes:
        console.print("image sizes (HxW): " + ", ".join(f"{s} x{n}" for s, n in report.sizes.items()),
                      highlight=False)
    table = Table(title="classes")
    table.add_column("index", justify="right")
    table.add_column("name")
    table.add_column("pixels", justify="right")
    for i, (name, share) in enumerate(zip(report.class_names, report.pixel_share)):
        table.add_row(str(i), Text(name), f"{100 * share:.2f}%")
    table.add_row(str(report.ignore_index), Text(f"{report.ignore_name} (ignored)"), f"{100 * report.void_share:.2f}%",
                  style="dim")
    console.print(table)
    if report.ok:
        console.print("[green]no problems found[/]")
        return
    console.print(f"[bold red]{len(report.problems)} problem(s):[/]")
    for p in report.problems:
        console.print(f"  {p.path}: {p.problem}", highlight=False, markup=False, soft_wrap=True)


# --- models ---------------------------------------------------------------------------------------

def models_table(rows, classes: int, height: int, width: int, *, encoders=()) -> None:
    """rows: (name, description, params, GFLOPs, output stride) per registered model; encoders: (name,
    description, params, GFLOPs) per pretrained backbone."""
    table = Table(title=f"Models ({classes} classes, GFLOPs per {height}x{width} image)")
    table.add_column("name", style="bold")
    table.add_column("description")
    table.add_column("params", justify="right")
    table.add_column("GFLOPs", justify="right")
    table.add_column("stride", justify="right")
    for name, description, params, flops, stride in rows:
        table.add_row(name, description, f"{params:,}", f"{flops:.2f}", str(stride))
    console.print(table)
    if encoders:
        table = Table(title=f"Pretrained encoders (--encoder NAME; the backbone alone, GFLOPs per {height}x{width} "
                            "image)")
        table.add_column("encoder", style="bold")
        table.add_column("description")
        table.add_column("params", justify="right")
        table.add_column("GFLOPs", justify="right")
        for name, description, params, flops in encoders:
            table.add_row(name, description, f"{params:,}", f"{flops:.2f}")
        console.print(table)
    console.print("Details: segcli models show NAME|RECIPE.toml [--encoder NAME] [--summary]", highlight=False)


def model_facts(*, name: str, recipe, description: str, options: dict, classes: int, params: int, trainable: int,
                height: int, width: int, flops: float, stride: int, imagenet_weights=None) -> None:
    """imagenet_weights: (file, URL, Keras' cache folder) of the model's backbone, or None."""
    console.print(f"model: {name}" + (f"  (from {recipe})" if recipe else ""), highlight=False, markup=False)
    console.print(f"  {description}", highlight=False, markup=False)
    if options:
        console.print(f"options: {options}", highlight=False, markup=False)
    console.print(f"classes: {classes}", highlight=False)
    console.print(f"parameters: {params:,} ({trainable:,} trainable)", highlight=False)
    console.print(f"GFLOPs per {height}x{width} image: {flops:.3f}", highlight=False)
    note = "" if height % stride == 0 and width % stride == 0 else f" ({height}x{width} is padded to a multiple)"
    console.print(f"output stride: {stride}{note}", highlight=False)
    if imagenet_weights:
        file, url, cache = imagenet_weights
        console.print(f"ImageNet weights of the encoder: {file}, fetched by --encoder-weights imagenet from {url}; "
                      f"offline, fetch it elsewhere and pass --encoder-weights PATH, or copy it to {cache}/",
                      highlight=False, markup=False, soft_wrap=True)
    console.print(f"params: {params}", highlight=False)


def trained_model_facts(*, path, name: str | None, options: dict, classes: list[str], trained_size, precision,
                        params: int, trainable: int, height: int, width: int, flops: float, stride: int) -> None:
    """A trained model file's facts (`models show MODEL.keras`); what the file does not record says so."""
    def line(text: str) -> None:
        console.print(text, highlight=False, markup=False, soft_wrap=True)

    line(f"model file: {path}")
    line(f"architecture: {name or 'not recorded (a model file not written by segcli train)'}")
    if options:
        line(f"options: {options}")
    line(f"classes ({len(classes)}): {', '.join(classes)}")
    line("trained on: " + (f"{trained_size[0]}x{trained_size[1]} crops (HxW)" if trained_size else "not recorded"))
    line(f"trained in precision: {precision or 'not recorded'}")
    line(f"parameters: {params:,} ({trainable:,} trainable)")
    line(f"GFLOPs per {height}x{width} image: {flops:.3f}")
    note = "" if height % stride == 0 and width % stride == 0 else f" ({height}x{width} is padded to a multiple)"
    line(f"output stride: {stride}{note}")
    line(f"params: {params}")


# --- train ----------------------------------------------------------------------------------------

def train_interrupted(run_dir) -> None:
    err_console.print(f"\n[yellow]interrupted.[/] The last finished epoch is saved; continue with:\n"
                      f"  segcli train --resume {escape(shlex.quote(str(run_dir)))}", highlight=False, soft_wrap=True)


def train_summary(result) -> None:
    """The table of a finished run (segcli.training's result: run_dir and metrics) and where its files are."""
    m = result.metrics
    table = Table(title=f"{m['model']} — {escape(str(result.run_dir))}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("epochs", f"{m['epochs']}/{m['epochs_planned']}" + (" (time budget)" if m["stopped_by_time_budget"] else ""))
    table.add_row("val pixel accuracy", pct(m["val"]["pixel_accuracy"]))
    table.add_row("val mIoU", pct(m["val"]["miou"]))
    table.add_row("best val mIoU", f"{pct(m['best_val_miou'])} (epoch {m['best_epoch']})" if m["best_epoch"] else "-")
    table.add_row("train images/s", f"{m['train_images_per_sec']:.1f}")
    table.add_row("training time", f"{m['train_seconds'] / 60:.1f} min")
    table.add_row("parameters", f"{m['params']:,}")
    table.add_row("precision / devices", f"{m['precision']} / {m['strategy']}")
    table.add_row("backend / hardware", f"{m.get('backend') or 'tensorflow'} / {m['hardware']}")
    console.print(table)
    console.print(f"outputs: {result.run_dir}/ (model.keras, best.keras, metrics.json, history.csv, curves.png)",
                  markup=False, highlight=False, soft_wrap=True)


def train_other_process(result) -> None:
    """Processes 1.. of a several-process training print one line; process 0 prints the summary."""
    console.print(f"process {result.process_index} of {result.process_count} finished; process 0 wrote "
                  f"{result.run_dir}", markup=False, highlight=False, soft_wrap=True)


# --- predict, overlay -----------------------------------------------------------------------------

def predictions_written(count: int, out, *, overlay: bool, probabilities: bool) -> None:
    extras = [what for what, on in (("overlays", overlay), ("probabilities", probabilities)) if on]
    console.print(f"{count} mask{'s' if count != 1 else ''}"
                  f"{' + ' + ' + '.join(extras) if extras else ''} written to {out}/", highlight=False, markup=False,
                  soft_wrap=True)


def videos_written(results) -> None:
    """segcli.inference.video.predict_videos' results: each video (and masks folder) with its frames/s."""
    for r in results:
        if not r.frames:
            console.print(f"{r.source}: no frame predicted, nothing written", highlight=False, markup=False)
            continue
        console.print(f"wrote {r.video}: {r.frames} frames, {r.width}x{r.height} at {r.fps:g} fps "
                      f"({r.frames_per_second:.1f} frames/s predicted)", highlight=False, markup=False, soft_wrap=True)
        if r.masks is not None:
            console.print(f"wrote {r.masks}/: {r.frames} palette PNG masks", highlight=False, markup=False,
                          soft_wrap=True)


def overlay_written(path) -> None:
    console.print(f"wrote {path}", highlight=False, markup=False, soft_wrap=True)


# --- evaluate -------------------------------------------------------------------------------------

def evaluation(result: dict, model, data_dir, split: str, out) -> None:
    """segcli.evaluation.evaluate's result: notes, the per-class table, the overall figures, the files written."""
    for note in result["notes"]:
        console.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    table = Table(title=Text(f"{Path(model).name} on {data_dir} ({split}, {result['images']} images)"))
    table.add_column("class")
    table.add_column("IoU", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("pixels", justify="right")
    for row in result["per_class"]:
        table.add_row(Text(row["name"]), pct(row["iou"]), pct(row["accuracy"]), f"{row['pixels']:,}")
    console.print(table)
    console.print(f"pixel accuracy: {pct(result['pixel_accuracy'])}  (void / ignored pixels left out: "
                  f"{result['ignored_pixels']:,})", highlight=False, markup=False)
    console.print(f"mIoU: {pct(result['miou'])}  (mean over classes present in truth or prediction)",
                  highlight=False, markup=False)
    if result.get("tta"):
        console.print(f"test-time augmentation: {result['tta']} ({result['tta_passes']} forward passes per image, "
                      "probabilities averaged)", highlight=False, markup=False)
    tut = result["tutorial"]
    if tut:
        how = ("the model has a void class" if tut["model_has_void_class"]
               else "the model has no void class: void pixels count as wrong")
        console.print(f"tutorial's figure: {pct(tut['pixel_accuracy_void_counted'])} pixel accuracy with void counted "
                      f"as a class ({tut['crop'][0]}x{tut['crop'][1]} centre crops, short side resized to "
                      f"{tut['short_side']}; {how})", highlight=False, markup=False)
    if result.get("outputs"):
        console.print(f"outputs: {out}/ (confusion.csv, confusion.png, evaluation.json)", highlight=False,
                      markup=False, soft_wrap=True)


# --- compare --------------------------------------------------------------------------------------

def comparison(result: dict, out) -> None:
    """segcli.compare.compare's result: the models side by side, the hardware as caption, the files written."""
    from segcli.compare import hardware_line, table_rows

    rows = result["rows"]
    table = Table(title=escape(" vs ".join(r["name"] for r in rows)), caption=escape(hardware_line(rows)))
    table.add_column("")
    for r in rows:
        table.add_column(r["name"], justify="right")
    for cells in table_rows(rows):
        table.add_row(*cells)
    console.print(table)
    console.print(f"written: {out}/compare.md, compare.json, compare.png", markup=False, highlight=False)


# --- export ---------------------------------------------------------------------------------------

def export_result(result, model, opset: int) -> None:
    """segcli.export.export_model's ExportResult: what was written, the check against Keras, the classes file."""
    from segcli.export import FORMAT_NAMES

    shape = ("any batch, height and width" if result.fixed_size is None
             else f"fixed input 1x{result.fixed_size[0]}x{result.fixed_size[1]}x3")
    extra = f", opset {opset}" if result.format == "onnx" else ""
    precision = "INT8" if result.int8 else "float32"
    console.print(f"exported {model} -> {result.path} ({FORMAT_NAMES[result.format]}{extra}, {precision}, {shape})",
                  highlight=False, markup=False, soft_wrap=True)
    if result.converted_from:
        console.print(f"  rebuilt in float32 from the {result.converted_from} policy it was trained with",
                      highlight=False, markup=False, soft_wrap=True)
    for note in result.notes:
        console.print(f"  note: {note}", highlight=False, markup=False, soft_wrap=True)
    checks = ", ".join(f"{h}x{w} {diff:.2e}" for (h, w), diff in result.checks)
    before = "its float32 IR's " if result.int8 else ""
    console.print(f"  {before}check vs Keras: max abs diff {result.max_abs_diff:.2e} ({checks}; tolerance "
                  f"{result.tolerance:.1e})", highlight=False, markup=False, soft_wrap=True)
    if result.int8:
        q = result.int8
        console.print(f"  INT8 (NNCF): calibrated on {q.calibration_images} train images of {q.data}; its labels "
                      f"are Keras' (float32) on {100 * q.label_agreement:.2f}% of the pixels of {q.check_images} "
                      f"{q.check_split} images", highlight=False, markup=False, soft_wrap=True)
    state = "written" if result.classes_written else "unchanged"
    console.print(f"  classes: {result.classes_path} ({state})", highlight=False, markup=False, soft_wrap=True)


# --- tune -----------------------------------------------------------------------------------------

def tune_interrupted(out) -> None:
    err_console.print(f"\n[yellow]interrupted.[/] Finished trials are kept; continue with:\n"
                      f"  segcli tune --resume {escape(shlex.quote(str(out)))}", highlight=False, soft_wrap=True)


def tune_summary(result: dict) -> None:
    """segcli.tune.tune's result: the trials (knobs, val mIoU, pixel accuracy, minutes), the best, the files."""
    from segcli.tune import TABLE_COLUMNS, table_cells

    s, knobs, best = result["settings"], [k["name"] for k in result["knobs"]], result["best"]
    table = Table(title=escape(f"segcli tune: {s['model']}, {s['algorithm']} search, {len(result['rows'])}/"
                               f"{s['trials']} trials, {result['minutes']:.1f} min"))
    table.add_column("trial", no_wrap=True)
    for name in knobs:  # model.options.base_filters: base_filters (tune.md has the whole name)
        table.add_column(escape(name.rsplit(".", 1)[-1]))
    for name in TABLE_COLUMNS:
        table.add_column(name, justify="right")
    for row in result["rows"]:
        status = "" if row["status"] == "completed" else f" ({row['status']})"
        table.add_row(escape(row["trial"] + status), *[escape(c) for c in table_cells(row, knobs)],
                      style="bold green" if best and row["trial"] == best["trial"] else None)
    console.print(table)
    if result["stopped_by_budget"]:
        console.print("the time budget was spent before the last trials", highlight=False, markup=False)
    out = result["out"]
    if best:
        console.print(f"best: {best['trial']} (val mIoU {pct(best['val_miou'])}); train it with:\n"
                      f"  segcli train {s['model']} DATA_DIR --recipe {out}/best-recipe.toml",
                      highlight=False, markup=False, soft_wrap=True)
    console.print(f"written: {out}/tune.md, tune.json, tune.png, best-recipe.toml", highlight=False, markup=False,
                  soft_wrap=True)
