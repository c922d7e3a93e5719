"""The `segcli` command line: parses arguments, calls the library, prints with rich.

Nothing imports this module; the work lives in segcli.data, segcli.models and the modules
built on them.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import List, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's C++ log lines out of the output

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from segcli.errors import SegcliError

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    help="Semantic image segmentation: train FCN / U-Net, predict masks, evaluate, compare.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Inspect and check datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks on errors.")):
    _state["debug"] = debug
    if not debug:
        _import_tensorflow_quietly()


def _import_tensorflow_quietly() -> None:
    """TensorFlow's C++ side prints start-up lines to fd 2 before its log level applies: mute them once."""
    if "tensorflow" in sys.modules:
        return
    try:
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    except Exception:
        pass  # the real import, later, reports the problem
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# --- commands -------------------------------------------------------------------------------
# (each command below parses options, calls one library function and prints its result)

# --- data: check a dataset folder -------------------------------------------------------------
def _data_print_report(report) -> None:
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


@data_app.command("check")
def data_check(
    directory: Path = typer.Argument(..., metavar="DIR", help="Dataset folder (or a CSV of image,mask rows)."),
    classes: Optional[Path] = typer.Option(None, "--classes", help="classes.json (default: DIR/classes.json, "
                                           "else inferred from the masks)."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of train held out as val when "
                                       "there is no val split."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON only."),
):
    """Read every image and mask once: layout, encoding, counts, sizes, class shares and every problem.

    Exit 0 when clean, 1 when problems were found, 2 when DIR cannot be used at all."""
    import json

    from segcli.data import check_dataset, open_dataset

    report = check_dataset(open_dataset(directory, classes=classes, val_fraction=val_fraction))
    if json_out:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _data_print_report(report)
    if not report.ok:
        raise typer.Exit(1)

# --- models: list architectures, show one model's facts ------------------------------------------
models_app = typer.Typer(
    help="List the model architectures (parameters, GFLOPs per image) or show one model.",
    invoke_without_command=True,
)
app.add_typer(models_app, name="models")


def _models_table(size: str, classes: int) -> None:
    from segcli.models import build_model, count_params, gflops, list_models, model_entry, output_stride

    height, width = _parse_size(size)
    table = Table(title=f"Models ({classes} classes, GFLOPs per {height}x{width} image)")
    table.add_column("name", style="bold")
    table.add_column("description")
    table.add_column("params", justify="right")
    table.add_column("GFLOPs", justify="right")
    table.add_column("stride", justify="right")
    for name in list_models():
        model = build_model(name, classes)
        table.add_row(name, model_entry(name).description, f"{count_params(model):,}",
                      f"{gflops(model, height, width):.2f}", str(output_stride(model)))
        del model
    console.print(table)
    console.print("Details: segcli models show NAME|RECIPE.toml [--summary]", highlight=False)


@models_app.callback()
def models_main(
    ctx: typer.Context,
    size: str = typer.Option("360x480", "--size", help="Image size HEIGHTxWIDTH for the GFLOPs column."),
    classes: int = typer.Option(12, "--classes", min=1, help="Number of classes the models output."),
):
    """Without a command: a table of the registered architectures with parameters and GFLOPs per image."""
    if ctx.invoked_subcommand is None:
        _guard(_models_table)(size, classes)  # callbacks are not wrapped by _guard_all


@models_app.command("show")
def models_show(
    model: str = typer.Argument(..., metavar="NAME|RECIPE.toml", help="A registered name or a recipe TOML file."),
    classes: int = typer.Option(12, "--classes", min=1, help="Number of classes the model outputs."),
    size: str = typer.Option("360x480", "--size", help="Image size HEIGHTxWIDTH for GFLOPs."),
    summary: bool = typer.Option(False, "--summary", help="Also print the Keras layer summary."),
):
    """One model's parameter count, GFLOPs per image and output stride."""
    import math

    from segcli.models import (build_model, count_params, gflops, list_models, model_entry, model_spec_from_toml,
                               output_stride)

    height, width = _parse_size(size)
    recipe = None
    if model.lower().endswith(".toml") or (model not in list_models() and Path(model).is_file()):
        recipe = Path(model)
        name, options = model_spec_from_toml(recipe)
    else:
        name, options = model, {}
    entry = model_entry(name)
    net = build_model(name, classes, **options)
    params, stride = count_params(net), output_stride(net)
    trainable = sum(math.prod(w.shape) for w in net.trainable_weights)
    console.print(f"model: {name}" + (f"  (from {recipe})" if recipe else ""), highlight=False, markup=False)
    console.print(f"  {entry.description}", highlight=False, markup=False)
    if options:
        console.print(f"options: {options}", highlight=False, markup=False)
    console.print(f"classes: {classes}", highlight=False)
    console.print(f"parameters: {params:,} ({trainable:,} trainable)", highlight=False)
    console.print(f"GFLOPs per {height}x{width} image: {gflops(net, height, width):.3f}", highlight=False)
    note = "" if height % stride == 0 and width % stride == 0 else f" ({height}x{width} is padded to a multiple)"
    console.print(f"output stride: {stride}{note}", highlight=False)
    console.print(f"params: {params}", highlight=False)
    if summary:
        net.summary()

def _parse_size(text: str | None, what: str = "--size") -> list[int] | None:
    if text is None:
        return None
    parts = text.lower().replace(",", "x").split("x")
    try:
        size = [int(p) for p in parts]
    except ValueError:
        size = []
    if len(size) != 2 or min(size) <= 0:
        raise SegcliError(f"{what}: expected HEIGHTxWIDTH with both >= 1, e.g. 368x480, got {text!r}")
    return size


def _overrides(**tables: dict) -> dict:
    """Recipe overrides holding only the flags given: {"train": {"epochs": "5"}}, {} when none. Numbers stay
    the flags' text: segcli.recipe checks every value (and names the flag) in one place."""
    given = {table: {key: value for key, value in values.items() if value is not None}
             for table, values in tables.items()}
    return {table: values for table, values in given.items() if values}


@app.command("train")
def train_cmd(
    model: Optional[str] = typer.Argument(None, help="Architecture: fcn, unet, ... (see `segcli models`)."),
    data_dir: Optional[Path] = typer.Argument(None, help="Dataset folder (see `segcli data check`)."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="Recipe TOML file, or a shipped recipe's name."),
    epochs: Optional[str] = typer.Option(None, "--epochs", metavar="INT"),
    batch_size: Optional[str] = typer.Option(None, "--batch-size", metavar="INT",
                                             help="Global batch size (all replicas)."),
    lr: Optional[str] = typer.Option(None, "--lr", metavar="FLOAT", help="Learning rate."),
    size: Optional[str] = typer.Option(None, "--size", help="Training crop HxW, e.g. 368x480."),
    precision: Optional[str] = typer.Option(None, "--precision", help="auto|float32|mixed_float16|mixed_bfloat16"),
    distribute: Optional[str] = typer.Option(None, "--distribute", help="auto|none|mirrored"),
    jit: Optional[str] = typer.Option(None, "--jit", help="XLA compile: auto|true|false (auto: on with a GPU)."),
    max_minutes: Optional[str] = typer.Option(None, "--max-minutes", metavar="FLOAT",
                                              help="Stop after this much training time (0: no limit)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: runs/MODEL-TIMESTAMP)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue an interrupted run folder."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out folder."),
    seed: Optional[str] = typer.Option(None, "--seed", metavar="INT"),
    classes: Optional[Path] = typer.Option(None, "--classes", help="classes.json (default: DATA_DIR/classes.json)."),
):
    """Train MODEL on DATA_DIR and write a run folder (model.keras, best.keras, metrics, history, curves)."""
    from segcli.training import TrainingInterrupted, train

    overrides = _overrides(data={"size": _parse_size(size)},
                           train={"epochs": epochs, "batch_size": batch_size, "lr": lr, "precision": precision,
                                  "distribute": distribute, "jit": jit, "max_minutes": max_minutes, "seed": seed})
    if resume is None and (model is None or data_dir is None):
        raise SegcliError("MODEL and DATA_DIR are required (or --resume RUN_DIR)")
    try:
        result = train(model, data_dir, recipe_file=recipe, overrides=overrides, out=out, resume=resume,
                       force=force, classes_file=classes, console=console)
    except TrainingInterrupted as exc:
        err_console.print(f"\n[yellow]interrupted.[/] The last finished epoch is saved; continue with:\n"
                          f"  segcli train --resume {escape(str(exc.run_dir))}", highlight=False, soft_wrap=True)
        raise typer.Exit(130)
    m = result.metrics
    table = Table(title=f"{m['model']} — {escape(str(result.run_dir))}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("epochs", f"{m['epochs']}/{m['epochs_planned']}" + (" (time budget)" if m["stopped_by_time_budget"] else ""))
    table.add_row("val pixel accuracy", _pct(m["val"]["pixel_accuracy"]))
    table.add_row("val mIoU", _pct(m["val"]["miou"]))
    table.add_row("best val mIoU", f"{_pct(m['best_val_miou'])} (epoch {m['best_epoch']})" if m["best_epoch"] else "-")
    table.add_row("train images/s", f"{m['train_images_per_sec']:.1f}")
    table.add_row("training time", f"{m['train_seconds'] / 60:.1f} min")
    table.add_row("parameters", f"{m['params']:,}")
    table.add_row("precision / devices", f"{m['precision']} / {m['strategy']}")
    console.print(table)
    console.print(f"outputs: {result.run_dir}/ (model.keras, best.keras, metrics.json, history.csv, curves.png)",
                  markup=False, highlight=False, soft_wrap=True)


def _pct(value) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}%"


RUN_PRECISION_HELP = ("auto|float32|mixed_float16|mixed_bfloat16 to run the model under (auto: mixed_float16 "
                      "with a GPU, mixed_bfloat16 on a CPU with native bf16, else float32).")

# --- predict: masks for images of any size; overlay: a mask over its image -----------------------------

@app.command("predict")
def predict_cmd(
    model: Path = typer.Argument(..., help="A .keras model file written by `segcli train`."),
    inputs: List[str] = typer.Argument(..., metavar="INPUT...",
                                       help="Image files, folders of images or glob patterns."),
    out: Path = typer.Option(Path("predictions"), "--out", help="Output folder (earlier masks there are replaced; "
                             "it may not be a folder of the inputs)."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Equal-size images (or tiles) per model call."),
    overlay: bool = typer.Option(False, "--overlay", help="Also write <name>_overlay.png (mask blended, legend)."),
    alpha: float = typer.Option(0.5, "--alpha", min=0.0, max=1.0, help="Mask opacity in overlays."),
    probabilities: bool = typer.Option(False, "--probabilities",
                                       help="Also write <name>_probs.npy: float16 (H, W, classes) softmax."),
    tile: int = typer.Option(1024, "--tile", min=1, help="Images with a side past this run in overlapping tiles."),
    overlap: int = typer.Option(128, "--overlap", min=0, help="Overlap of neighbouring tiles in pixels."),
    precision: str = typer.Option("auto", "--precision", help=RUN_PRECISION_HELP),
):
    """Predict a palette PNG mask (the input's size, the model's class colours) for every input image."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from segcli.inference import check_predict_out, predict_files, resolve_inputs
    from segcli.modelfile import load_model

    files = resolve_inputs(inputs)  # a missing input or a bad --out fails before the model loads
    check_predict_out(files, out, overlay=overlay, probabilities=probabilities)
    loaded = load_model(model, precision)
    with Progress(TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=err_console, transient=True) as bar:
        task = bar.add_task("", total=len(files))

        def step(done, total, path):
            bar.update(task, completed=done, description=escape(Path(path).name))

        records = predict_files(loaded, files, out, overlay=overlay, alpha=alpha, probabilities=probabilities,
                                tile=tile, overlap=overlap, batch_size=batch_size, progress=step)
    extras = [what for what, on in (("overlays", overlay), ("probabilities", probabilities)) if on]
    console.print(f"{len(records)} mask{'s' if len(records) != 1 else ''}"
                  f"{' + ' + ' + '.join(extras) if extras else ''} written to {out}/", highlight=False, markup=False,
                  soft_wrap=True)


@app.command("overlay")
def overlay_cmd(
    image: Path = typer.Argument(..., help="The image."),
    mask: Path = typer.Argument(..., help="Its label PNG (palette, index or colour mask)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output PNG, or an existing folder to write it in "
                                       "(default: ./IMAGE_overlay.png or _panel.png)."),
    alpha: float = typer.Option(0.5, "--alpha", min=0.0, max=1.0, help="Mask opacity."),
    panel: bool = typer.Option(False, "--panel", help="image | coloured mask | overlay side by side."),
    classes: Optional[Path] = typer.Option(None, "--classes",
                                           help="classes.json (default: beside the mask or its dataset, "
                                                "else classes inferred from the mask)."),
):
    """Draw MASK over IMAGE with a legend of the classes present."""
    from segcli.overlay import overlay_files

    written = overlay_files(image, mask, out, alpha=alpha, panel=panel, classes_file=classes)
    console.print(f"wrote {written}", highlight=False, markup=False, soft_wrap=True)

# --- evaluate: confusion matrix, pixel accuracy, IoU per class (+ the tutorial's figure) ---------------

@app.command("evaluate")
def evaluate_cmd(
    model: Path = typer.Argument(..., help="A .keras model file written by `segcli train`."),
    data_dir: Path = typer.Argument(..., help="Dataset folder (see `segcli data check`)."),
    split: str = typer.Option("val", "--split", help="val|test (or train)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write confusion.csv, confusion.png, evaluation.json here."),
    classes: Optional[Path] = typer.Option(None, "--classes", help="classes.json (default: DATA_DIR/classes.json)."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Equal-size images per model call."),
    json_out: bool = typer.Option(False, "--json", help="Print only the results as JSON."),
    precision: str = typer.Option("auto", "--precision", help=RUN_PRECISION_HELP),
):
    """Score MODEL on a split of DATA_DIR at full image size: pixel accuracy, mIoU, IoU and accuracy per class."""
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from segcli.evaluation import evaluate
    from segcli.files import check_writable_dir
    from segcli.modelfile import load_model

    if split not in ("train", "val", "test"):
        raise SegcliError(f"--split {split!r}: expected val, test or train")
    if not data_dir.exists():
        raise SegcliError("no such file or directory", data_dir)
    if out is not None:
        check_writable_dir(out)  # before the model runs
    loaded = load_model(model, precision)
    with Progress(TextColumn("evaluate {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True, disable=json_out) as bar:
        task = bar.add_task(split, total=None)

        def step(stage, done, total):
            bar.update(task, completed=done, total=total, description=split if stage == "images" else stage)

        result = evaluate(loaded, data_dir, split, classes_file=classes, batch_size=batch_size, out_dir=out,
                          progress=step)
    if json_out:
        typer.echo(json.dumps(result, indent=2))
        return
    for note in result["notes"]:
        console.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    table = Table(title=Text(f"{Path(model).name} on {data_dir} ({split}, {result['images']} images)"))
    table.add_column("class")
    table.add_column("IoU", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("pixels", justify="right")
    for row in result["per_class"]:
        table.add_row(Text(row["name"]), _pct(row["iou"]), _pct(row["accuracy"]), f"{row['pixels']:,}")
    console.print(table)
    console.print(f"pixel accuracy: {_pct(result['pixel_accuracy'])}  (void / ignored pixels left out: "
                  f"{result['ignored_pixels']:,})", highlight=False, markup=False)
    console.print(f"mIoU: {_pct(result['miou'])}  (mean over classes present in truth or prediction)",
                  highlight=False, markup=False)
    tut = result["tutorial"]
    if tut:
        how = ("the model has a void class" if tut["model_has_void_class"]
               else "the model has no void class: void pixels count as wrong")
        console.print(f"tutorial's figure: {_pct(tut['pixel_accuracy_void_counted'])} pixel accuracy with void counted "
                      f"as a class ({tut['crop'][0]}x{tut['crop'][1]} centre crops, short side resized to "
                      f"{tut['short_side']}; {how})", highlight=False, markup=False)
    if result.get("outputs"):
        console.print(f"outputs: {out}/ (confusion.csv, confusion.png, evaluation.json)", highlight=False,
                      markup=False, soft_wrap=True)

@app.command("compare")
def compare_cmd(
    args: Optional[List[str]] = typer.Argument(None, help="MODEL... [DATA_DIR] (default data: sample_data/); "
                                               "with --from, more run folders."),
    recipe: Optional[List[str]] = typer.Option(None, "--recipe", help="One recipe for all, or one per model."),
    epochs: Optional[str] = typer.Option(None, "--epochs", metavar="INT"),
    batch_size: Optional[str] = typer.Option(None, "--batch-size", metavar="INT"),
    size: Optional[str] = typer.Option(None, "--size", help="Training crop HxW."),
    max_minutes: Optional[str] = typer.Option(None, "--max-minutes", metavar="FLOAT",
                                              help="Training time budget per model."),
    precision: Optional[str] = typer.Option(None, "--precision"),
    seed: Optional[str] = typer.Option(None, "--seed", metavar="INT"),
    classes: Optional[Path] = typer.Option(None, "--classes", help="classes.json for DATA_DIR."),
    from_runs: Optional[List[Path]] = typer.Option(None, "--from", help="Compare finished run folders instead: "
                                                   "--from RUN_DIR RUN_DIR ... (or --from repeated)."),
    out: Path = typer.Option(Path("compare-out"), "--out", help="Folder for runs and compare.md/.json/.png."),
):
    """Train each MODEL under one recipe and seed (or read --from runs) and print them side by side."""
    from segcli import recipe as recipes
    from segcli.compare import compare, hardware_line, table_rows

    overrides = _overrides(data={"size": _parse_size(size)},
                           train={"epochs": epochs, "batch_size": batch_size, "max_minutes": max_minutes,
                                  "precision": precision, "seed": seed})
    recipes.resolve(None, overrides)  # every flag checked before anything is trained or written
    args = list(args or [])
    data_dir = None
    if from_runs:  # `--from A B`: the option takes A, B arrives as an argument; nothing is trained
        from_runs, args = list(from_runs) + [Path(a) for a in args], []
    elif args and Path(args[-1]).is_dir():
        data_dir = Path(args.pop())
    if not from_runs:
        if not args:
            raise SegcliError("name at least one MODEL to train (or give --from RUN_DIR ...)")
        data_dir = data_dir or Path(__file__).resolve().parent.parent / "sample_data"
        if not data_dir.is_dir():
            raise SegcliError("no DATA_DIR given and sample_data/ not found", data_dir)
        for name in recipe or []:  # each recipe file and MODEL checked before the first training
            recipes.read_recipe_file(name)
        for name in args:
            recipes.resolve(None, {"model": {"name": name}})
    train_args = []
    for flag, value in (("--epochs", epochs), ("--batch-size", batch_size), ("--size", size),
                        ("--max-minutes", max_minutes), ("--precision", precision), ("--seed", seed),
                        ("--classes", classes)):
        if value is not None:
            train_args += [flag, str(value)]
    result = compare(args, data_dir, out, recipes=recipe, train_args=train_args, from_runs=from_runs)
    rows = result["rows"]
    table = Table(title=escape(" vs ".join(r["name"] for r in rows)), caption=escape(hardware_line(rows)))
    table.add_column("")
    for r in rows:
        table.add_column(r["name"], justify="right")
    for cells in table_rows(rows):
        table.add_row(*cells)
    console.print(table)
    console.print(f"written: {out}/compare.md, compare.json, compare.png", markup=False, highlight=False)

# --- export: SavedModel / ONNX / TFLite, checked against Keras ------------------------------------
@app.command("export")
def export_cmd(
    model: Path = typer.Argument(..., help="A .keras model file (e.g. runs/NAME/best.keras)."),
    fmt: str = typer.Option(..., "--format", "-f", help="savedmodel | onnx | tflite"),
    out: Optional[Path] = typer.Option(None, "--out", help="Output path (default: beside MODEL: "
                                       "NAME_savedmodel/, NAME.onnx, NAME.tflite)."),
    size: Optional[str] = typer.Option(None, "--size", help="TFLite only: a fixed input HxW instead of dynamic "
                                       "height/width (rounded up to the output stride)."),
    opset: int = typer.Option(17, "--opset", min=7, help="ONNX opset."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier export (a SavedModel folder segcli "
                               "wrote, a file of the same format; nothing else) and a different classes.json."),
):
    """Export MODEL as a float32 SavedModel, ONNX or TFLite file, with classes.json beside it (inside a SavedModel).

    Each export is run on random images right after writing and compared with Keras (max abs difference).

    ONNX needs the export extra: pip install 'segcli\\[export]'
    """
    from segcli.export import FORMAT_NAMES, export_model

    result = export_model(model, fmt, out, force=force, size=size, opset=opset)
    shape = ("any batch, height and width" if result.fixed_size is None
             else f"fixed input 1x{result.fixed_size[0]}x{result.fixed_size[1]}x3")
    extra = f", opset {opset}" if result.format == "onnx" else ""
    console.print(f"exported {model} -> {result.path} ({FORMAT_NAMES[result.format]}{extra}, float32, {shape})",
                  highlight=False, markup=False, soft_wrap=True)
    if result.converted_from:
        console.print(f"  rebuilt in float32 from the {result.converted_from} policy it was trained with",
                      highlight=False, markup=False, soft_wrap=True)
    for note in result.notes:
        console.print(f"  note: {note}", highlight=False, markup=False, soft_wrap=True)
    checks = ", ".join(f"{h}x{w} {diff:.2e}" for (h, w), diff in result.checks)
    console.print(f"  check vs Keras: max abs diff {result.max_abs_diff:.2e} ({checks}; tolerance "
                  f"{result.tolerance:.1e})", highlight=False, markup=False, soft_wrap=True)
    state = "written" if result.classes_written else "unchanged"
    console.print(f"  classes: {result.classes_path} ({state})", highlight=False, markup=False, soft_wrap=True)

# --- bench: training / pipeline / predict speed, tiled-predict memory, matmul peak -------------------
def _bench_list(text: Optional[str]) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


@app.command("bench")
def bench_cmd(
    quick: bool = typer.Option(False, "--quick", help="Tiny sizes (64x64, batch 4, 3 steps): a smoke test of "
                               "about a minute (30 s with one of --models)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset for the train path and the pipeline "
                                        "(default: ../shared/data/camvid, else synthetic PNGs)."),
    models: str = typer.Option("lambda-fcn,lambda-unet", "--models", help="Comma list of registered models."),
    precisions: Optional[str] = typer.Option(None, "--precisions", help="Comma list (default: float32,"
                                             "mixed_bfloat16; float32,mixed_float16 with a GPU)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Timed training steps per figure "
                                        "(default 10, 40 with a GPU, 3 with --quick)."),
    jit: str = typer.Option("auto", "--jit", help="XLA compile: auto|true|false (auto: on with a GPU)."),
    predict_batch: Optional[int] = typer.Option(None, "--predict-batch", min=1,
                                                help="Images per predict_on_batch call (default 8)."),
    json_out: Optional[str] = typer.Option(None, "--json", metavar="PATH|-",
                                           help="Also write the figures as JSON to PATH; '-' prints only JSON."),
    skip: str = typer.Option("", "--skip", help="Sections to leave out, a comma list of: matmul, train, fit, "
                             "pipeline, predict, tiled, precision."),
    precision_steps: Optional[int] = typer.Option(None, "--precision-steps", min=1, help="Training steps of the "
                                                  "precision section's loss curves (default 200; --quick leaves "
                                                  "the section out unless given)."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Also write the tables as a fenced text "
                                            "block to this file (for README.md)."),
):
    """Measure training images/s (segcli's train path vs a bare model.fit), the input pipeline, predict
    images/s, the peak memory of a tiled predict and the matmul peak of this machine; and the loss curves of
    a CamVid recipe in float32 and in bf16 (section precision), to check that bf16 costs no accuracy here."""
    import json

    from segcli.bench import bench_tables, run_bench
    from segcli.files import write_json

    result = run_bench(quick=quick, data=data, models=_bench_list(models), precisions=_bench_list(precisions),
                       steps=steps, jit=jit, predict_batch=predict_batch, skip=_bench_list(skip),
                       precision_steps=precision_steps,
                       progress=lambda msg: err_console.print(f"bench: {msg}", style="dim", highlight=False,
                                                              markup=False))
    if json_out == "-":
        typer.echo(json.dumps(result, indent=2))
        return
    for part in bench_tables(result):
        console.print(part, highlight=False, soft_wrap=True)
    if markdown:
        import io

        from segcli.files import write_text

        buffer = io.StringIO()
        plain = Console(file=buffer, width=110, color_system=None)
        for part in bench_tables(result):
            plain.print(part, highlight=False, soft_wrap=True)
        write_text(markdown, "```text\n" + buffer.getvalue().rstrip() + "\n```\n")
    if json_out:
        write_json(Path(json_out), result)
        console.print(f"figures written to {json_out}", highlight=False, markup=False)


def _guard(fn):
    """Turn SegcliError into one line on stderr and exit 2 (no traceback unless --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException, KeyboardInterrupt):
            raise
        except SegcliError as exc:
            if _state["debug"]:
                raise
            err_console.print(Text.assemble(("error:", "bold red"), f" {exc}"), highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code)
        except Exception as exc:
            if _state["debug"]:
                raise
            err_console.print(Text.assemble(("error:", "bold red"), f" {type(exc).__name__}: {exc} (run with --debug "
                                            "for the traceback)"), highlight=False, soft_wrap=True)
            raise typer.Exit(1)

    return wrapper


def _guard_all(typer_app: typer.Typer) -> None:
    for info in typer_app.registered_commands:
        info.callback = _guard(info.callback)
    for group in typer_app.registered_groups:
        _guard_all(group.typer_instance)


_guard_all(app)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
