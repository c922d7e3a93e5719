"""What the CLI shows: the consoles, every table, progress bar and report line (the one module that uses rich).

Each function takes what a library function returned and prints it; the command modules parse and call.
What the library reports while it works (segcli.progress) is shown by `RichProgress`.
"""

from __future__ import annotations

import io
import shlex
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

import segcli.progress

console = Console()
err_console = Console(stderr=True)


def pct(value) -> str:
    """A fraction as a percentage with one decimal; "-" for None or NaN."""
    return "-" if value is None or value != value else f"{100 * value:.1f}%"


# --- progress (segcli.progress) ------------------------------------------------------------------

class RichProgress(segcli.progress.Progress):
    """The library's progress on a rich console: messages and notes as lines, each task a transient bar
    (its name, the bar, done/total, elapsed time, the info text) that is gone when the task ends; `quiet`: nothing.
    Used as a context manager, it also closes the bars an error or Ctrl-C left open."""

    def __init__(self, on: Console | None = None, *, quiet: bool = False):
        self.console = on or console
        self.quiet = quiet
        self._bars: dict[str, tuple[Progress, object]] = {}

    def message(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, highlight=False, markup=False)

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(Text.assemble(("note:", "yellow"), f" {text}"), highlight=False)

    def start(self, task: str, total: int | None = None) -> None:
        self.end(task)
        if self.quiet or not self.console.is_interactive:  # a file or a pipe: a transient bar draws nothing,
            return  # and rich ends each with an empty line there
        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TextColumn("{task.fields[info]}"), console=self.console, transient=True)
        self._bars[task] = (bar, bar.add_task(escape(task), total=total, info=""))
        bar.start()

    def advance(self, task: str, done: int, total: int | None = None, info: str = "") -> None:
        if task in self._bars:
            bar, task_id = self._bars[task]
            bar.update(task_id, completed=done, info=escape(info), **({} if total is None else {"total": total}))

    def end(self, task: str) -> None:
        if task in self._bars:
            self._bars.pop(task)[0].stop()

    def close(self) -> None:
        for task in list(self._bars):
            self.end(task)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- errors (the root's _guard and main) ----------------------------------------------------------

def error(message: str) -> None:
    err_console.print(Text.assemble(("error:", "bold red"), f" {message}"), highlight=False, soft_wrap=True)


def usage_error(exc) -> None:
    """A usage error of Click's (unknown option, missing argument, bad value) as one `error` line, with where
    the usage is: "error: No such option: --bogus (see segcli train --help)"."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and ctx.command.get_help_option(ctx) is not None:
        message = f"{message.rstrip('.')} (see {ctx.command_path} {ctx.help_option_names[0]})"
    error(message)


def interrupted() -> None:
    err_console.print("interrupted")


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


# --- bench ----------------------------------------------------------------------------------------

def bench_progress(message: str) -> None:
    err_console.print(f"bench: {message}", style="dim", highlight=False, markup=False)


def _bench_fig(value, spec: str = ".1f") -> str:
    """A bench figure formatted with `spec`; "-" for None, NaN or infinity."""
    import math

    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:{spec}}"


def _bench_table(title: str, columns, rows, *, right=(), caption: str | None = None) -> Table:
    table = Table(title=title, caption=caption)
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left")
    for row in rows:
        table.add_row(*row)
    return table


def bench_parts(result: dict) -> list:
    """The lines and tables of a segcli.bench.run_bench result, in order (rich renderables)."""
    s, sysinfo = result["settings"], result["system"]
    out: list = [Text(f"{sysinfo['hardware']}; Keras {sysinfo['keras']} on {sysinfo['backend_version']}, "
                      f"Python {sysinfo['python']}; jit {'on' if sysinfo['jit'] else 'off'}"
                      f"{'; QUICK (tiny sizes)' if result['quick'] else ''}")]
    for name, reason in result.get("unavailable", {}).items():
        out.append(Text(f"{name}: not run on {sysinfo['backend']}: {reason}"))
    if "data" in result:
        d = result["data"]
        out.append(Text(f"data: {d['source']} ({d['train_pairs']} train + {d['val_pairs']} val pairs linked, "
                        f"{d['classes']} classes; {d['classes_note']})"))
    if "matmul_gflops" in result:
        out.append(Text(f"matmul peak ({s['matmul_n']}x{s['matmul_n']}): " + ", ".join(
            f"{k} {v:,.0f} GFLOP/s" for k, v in result["matmul_gflops"].items())))
    if "pipeline_images_per_sec" in result:
        rates = ", ".join(f"{k} {v:,.1f}" for k, v in result["pipeline_images_per_sec"].items())
        note = f"; {result['pipeline_note']}" if result.get("pipeline_note") else ""
        out.append(Text(f"input pipeline alone: {rates} images/s "
                        f"({s['train_size'][0]}x{s['train_size'][1]} crops, batch {s['batch_size']}{note})"))
    if result.get("training"):
        rows = result["training"]
        out.append(_bench_table(
            f"training images/s ({s['train_size'][0]}x{s['train_size'][1]}, batch {s['batch_size']}, "
            f"medians of {s['steps']}-step epochs)",
            ("model", "precision", "train", "fit", "fit (loss)", "train/fit"),
            [(r["model"], r["precision"], _bench_fig(r.get("train_images_per_sec")),
              _bench_fig(r.get("fit_images_per_sec")), _bench_fig(r.get("fit_plain_images_per_sec")),
              _bench_fig(r.get("train_over_fit"), ".2f")) for r in rows],
            right=("train", "fit", "fit (loss)", "train/fit"),
            caption=f"train: segcli's train path, {s['epochs'] - 1} epochs after the first; fit: bare model.fit on "
                    f"one cached batch (loss + metrics / loss only), {s['repeats']} timed epochs"))
        if any(k.endswith("_peak_fraction") for r in rows for k in r):
            out.append(_bench_table(
                "share of the matmul peak", ("model", "precision", "GFLOPs/img", "train", "fit", "fit (loss)"),
                [(r["model"], r["precision"], _bench_fig(r.get("gflops_per_image"), ".2f"),
                  pct(r.get("train_peak_fraction")), pct(r.get("fit_peak_fraction")),
                  pct(r.get("fit_plain_peak_fraction"))) for r in rows],
                right=("GFLOPs/img", "train", "fit", "fit (loss)"),
                caption="GFLOPs/image x 3 x images/s / matmul GFLOP/s of the precision's compute dtype"))
    if "torch" in result:
        t = result["torch"]
        notes = sorted({f"{r['model']} {r['precision']} {n}" for r in t["compare"] for n in r.get("torch_notes", [])})
        compiles = [f"{r['model']} {r['precision']} {r['torch_compile_seconds']:.1f} s" for r in t["compare"]
                    if r.get("torch_compile_seconds") is not None]
        out.append(_bench_table(
            f"segcli beside a PyTorch reference, images/s ({t['size'][0]}x{t['size'][1]}, batch {t['batch']})",
            ("model", "precision", "fit", "eager", "compiled", "fit/torch"),
            [(r["model"], r["precision"], _bench_fig(r.get("fit_plain_images_per_sec")),
              _bench_fig(r.get("torch_eager_images_per_sec")), _bench_fig(r.get("torch_compiled_images_per_sec")),
              _bench_fig(r.get("fit_plain_over_torch"), ".2f")) for r in t["compare"]],
            right=("fit", "eager", "compiled", "fit/torch"),
            caption=f"fit: segcli's bare fit with the loss only (the table above); eager, compiled: the PyTorch "
                    f"reference plain and torch.compile'd; fit/torch: fit over the faster of the two; torch {t['torch']} on "
                    f"{t['device']}, {t['threads']} threads: benchmarks/torch_reference.py, the same nets, loss and "
                    f"Adam on one cached batch, channels_last, median of {t['repeats']} x {t['steps']} steps"
                    + (f"; torch.compile's first step: {', '.join(compiles)}" if compiles else "")
                    + "".join(f"; {n}" for n in notes)))
    if result.get("predict"):
        out.append(_bench_table(
            f"predict_on_batch images/s ({s['predict_size'][0]}x{s['predict_size'][1]}, batch {s['predict_batch']})",
            ("model", "precision", "images/s", "run at"),
            [(r["model"], r["precision"], _bench_fig(r["images_per_sec"]),
              f"{r['padded_size'][0]}x{r['padded_size'][1]}") for r in result["predict"]],
            right=("images/s",)))
    if "tiled" in result:
        r = result["tiled"]
        out.append(Text(f"tiled predict of a {r['size'][0]}x{r['size'][1]} image ({r['model']}, tile {r['tile']}, "
                        f"overlap {r['overlap']}, child process): peak RSS {r['peak_rss_mib']:,.0f} MiB "
                        f"({r['peak_rss_before_predict_mib']:,.0f} MiB before predict), {r['seconds']:.1f} s, "
                        f"{r['megapixels_per_sec']:.2f} Mpx/s"))
    if "precision" in result:
        r = result["precision"]
        base, reduced = r["policies"]
        kind = {"amx_bf16": "AMX", "avx512_bf16": "AVX512-BF16, no AMX"}.get(r["cpu_bf16"],
                                                                           "no native bf16: bf16 is emulated")
        out.append(Text(f"precision on {r['cpu']} ({kind}): --precision auto picks {r['auto']} ({r['auto_reason']}). "
                        f"{r['recipe']} trained {r['steps']} steps from the same weights on the same batches "
                        f"({r['images']} images of {r['data']}, {r['size'][0]}x{r['size'][1]}, batch {r['batch']}); "
                        f"images/s: {base} {_bench_fig(r['images_per_sec'][base])}, {reduced} "
                        f"{_bench_fig(r['images_per_sec'][reduced])}; loss ratio {reduced}/{base} over the last half "
                        f"{_bench_fig(r['ratio_mean_last_half'], '.3f')}"))
        out.append(_bench_table(
            f"training loss (mean of every {r['every']} steps)", ("step", base, reduced, "ratio"),
            [(str(step), _bench_fig(a, ".4f"), _bench_fig(b, ".4f"), _bench_fig(q, ".3f"))
             for step, a, b, q in zip(r["steps_at"], r["curves"][base], r["curves"][reduced], r["ratio"])],
            right=("step", base, reduced, "ratio")))
    return out


def bench_tables(result: dict) -> None:
    for part in bench_parts(result):
        console.print(part, highlight=False, soft_wrap=True)


def bench_text(result: dict) -> str:
    """The bench tables as plain text 110 columns wide, in a fenced block (for README.md)."""
    buffer = io.StringIO()
    plain = Console(file=buffer, width=110, color_system=None)
    for part in bench_parts(result):
        plain.print(part, highlight=False, soft_wrap=True)
    return "```text\n" + buffer.getvalue().rstrip() + "\n```\n"


def figures_written(path) -> None:
    console.print(f"figures written to {path}", highlight=False, markup=False)


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
