"""`compare`: train several architectures under one recipe (or read finished runs) and put the
figures side by side: speed, accuracy, time, size, latency and memory, with the hardware used.

Each training runs in a child process; what it reports (segcli.progress) comes back over a pipe, one JSON line
per call, and is passed on to the `progress` that `compare` was given: the child shows nothing itself."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import segcli
from segcli.errors import SegcliError, describe
from segcli.files import (atomic_path, check_replaceable, ensure_writable_dir, guard_output, mark_segcli_folder,
                          new_temp_dir, remove_dead_writers_temp_files, write_json, write_text)
from segcli.progress import NullProgress, Progress
from segcli.runfolder import RunFolder
from segcli.sizes import round_up
from segcli.training.plots import number

COLUMNS = [  # key, header, format
    ("train_images_per_sec", "train images/s", "{:.1f}"),
    ("val_pixel_accuracy", "val pixel acc.", "{:.1%}"),
    ("val_miou", "val mIoU", "{:.1%}"),
    ("tutorial_pixel_accuracy", "val pixel acc., tutorial's protocol", "{:.1%}"),
    ("train_minutes", "training time (min)", "{:.1f}"),
    ("epochs", "epochs", "{:d}"),
    ("params", "parameters", "{:,}"),
    ("gflops_per_image", "GFLOPs/image", "{:.2f}"),
    ("latency_ms", "inference ms/image", "{:.1f}"),
    ("peak_rss_mb", "peak memory (MiB)", "{:.0f}"),
    ("precision", "precision", "{}"),  # what each run trained with, and where (runs may come from several machines)
    ("backend", "backend", "{}"),
    ("hardware", "hardware", "{}"),
]


# the child: first the watch on its parent and the quiet backend import (light modules), then segcli.compare,
# whose imports load Keras and TensorFlow; argv: JOB.json ERROR.txt REPORTS_FD LIFELINE_FD
_CHILD = """
import sys
from segcli.system import end_with_parent
end_with_parent(int(sys.argv[4]))
from segcli.backend import import_quietly
import_quietly()
from segcli.compare import _train_child
_train_child()
"""


def train_in_subprocess(model: str, data_dir: Path, run_dir: Path, recipe: str | None, overrides: dict | None = None,
                        classes_file: str | Path | None = None, progress: Progress | None = None) -> None:
    """One child process per model (clean TensorFlow state and an honest peak-memory figure each), which runs
    segcli.runs.train_and_evaluate; an error there ends as one line here (a SegcliError naming the model).
    The child's progress reports are passed on to `progress`. The child ends when this process ends, however
    it ends (segcli.system.end_with_parent: it holds the read end of a pipe only this process can write to);
    its job file and error line are in a temporary folder beside ``run_dir``, which a killed compare leaves
    for the next one to remove (compare() does)."""
    progress = progress or NullProgress()
    job = {"model_name": model, "data_dir": str(data_dir), "recipe_file": str(recipe) if recipe else None,
           "overrides": overrides or {}, "out": str(run_dir), "force": True,
           "classes_file": str(classes_file) if classes_file else None}
    package_root = str(Path(segcli.__file__).resolve().parent.parent)  # the child imports this very segcli
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    ensure_writable_dir(run_dir.parent)
    tmp = new_temp_dir(run_dir)
    try:
        job_path, error_path = tmp / "job.json", tmp / "error.txt"
        job_path.write_text(json.dumps(job))
        read_end, write_end = os.pipe()  # the child's reports
        lifeline_read, lifeline_write = os.pipe()  # never written: the child sees its end when this process ends
        try:
            proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(job_path), str(error_path), str(write_end),
                                     str(lifeline_read)], env=env, pass_fds=(write_end, lifeline_read))
        except BaseException:
            os.close(read_end)
            os.close(lifeline_write)
            raise
        finally:
            os.close(write_end)
            os.close(lifeline_read)
        try:
            with os.fdopen(read_end, encoding="utf-8") as reports:
                for line in reports:  # until the child exits
                    _replay(line, progress)
            proc.wait()
        except BaseException:  # Ctrl-C (the child has it too) or a failing display: the child does not outlive us
            proc.kill()
            proc.wait()
            raise
        finally:
            os.close(lifeline_write)
        error = error_path.read_text().strip() if error_path.is_file() else ""
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if proc.returncode != 0:
        raise SegcliError(f"training {model} failed ({error or f'exit {proc.returncode}'}); its run folder is "
                          f"{run_dir}")


class _Relay(Progress):
    """The child's side: each progress call as one JSON line [method, args...] on the pipe to the parent."""

    def __init__(self, stream):
        self.stream = stream

    def _send(self, *call) -> None:
        self.stream.write(json.dumps(call) + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        self._send("message", text)

    def note(self, text: str) -> None:
        self._send("note", text)

    def start(self, task: str, total: int | None = None) -> None:
        self._send("start", task, total)

    def advance(self, task: str, done: int, total: int | None = None, info: str = "") -> None:
        self._send("advance", task, done, total, info)

    def end(self, task: str) -> None:
        self._send("end", task)


_RELAYED = ("message", "note", "start", "advance", "end")


def _replay(line: str, progress: Progress) -> None:
    """The parent's side: one line from _Relay, called on `progress` (anything else on the pipe is skipped)."""
    try:
        method, *args = json.loads(line)
    except (ValueError, TypeError):
        return
    if method in _RELAYED:
        getattr(progress, method)(*args)


def _train_child() -> None:
    """The child of train_in_subprocess (_CHILD), which has already imported the backend quietly and watches its
    parent: argv = JOB.json ERROR.txt REPORTS_FD LIFELINE_FD. A failure writes its one line to ERROR.txt and
    exits non-zero (2 for a SegcliError, 130 for Ctrl-C, 1 for anything else)."""
    from segcli.errors import SegcliError as Error

    job_path, error_path, reports_fd = sys.argv[1:4]
    code = 0
    try:
        from segcli.runs import train_and_evaluate

        with os.fdopen(int(reports_fd), "w", encoding="utf-8") as reports:
            train_and_evaluate(**json.loads(Path(job_path).read_text()), progress=_Relay(reports))
    except Error as exc:
        Path(error_path).write_text(str(exc))
        code = getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        Path(error_path).write_text("interrupted")
        code = 130
    except Exception as exc:  # noqa: BLE001 - anything else still ends as one line in the parent
        Path(error_path).write_text(describe(exc))
        code = 1
    sys.exit(code)


def inference_latency_ms(model_path: Path, height: int, width: int, repeats: int = 5) -> float:
    """Median wall time of one forward pass on one image (batch 1), after two warm-up calls."""
    from segcli.modelfile import load_model

    loaded = load_model(model_path)
    stride = loaded.output_stride
    h, w = round_up(height, stride), round_up(width, stride)
    x = np.random.default_rng(0).uniform(0, 255, (1, h, w, 3)).astype("float32")
    for _ in range(2):
        loaded.model.predict_on_batch(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        loaded.model.predict_on_batch(x)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def summarize_run(run_dir: Path, latency_size: tuple[int, int]) -> dict:
    run = RunFolder(run_dir)
    m = run.metrics()  # a folder that is not a finished run is a one-line error
    model_path = run.model_file()
    return {
        "name": m["model"], "run_dir": str(run_dir),
        "train_images_per_sec": m["train_images_per_sec"],
        "val_pixel_accuracy": m["val"]["pixel_accuracy"], "val_miou": m["val"]["miou"],
        "best_val_miou": m.get("best_val_miou"),
        "tutorial_pixel_accuracy": (m.get("evaluation") or {}).get("tutorial_pixel_accuracy"),
        "train_minutes": m["train_seconds"] / 60.0, "epochs": int(m["epochs"]), "params": int(m["params"]),
        "gflops_per_image": m["gflops_per_image"], "gflops_size": m.get("gflops_size"),
        "latency_ms": inference_latency_ms(model_path, *latency_size), "latency_size": list(latency_size),
        "peak_rss_mb": m["peak_rss_mb"], "precision": m["precision"], "hardware": m["hardware"],
        "strategy": m.get("strategy"), "backend": m.get("backend") or "tensorflow",
    }


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return fmt.format(value)


def table_rows(rows: list[dict]) -> list[list[str]]:
    """One line per figure, one column per model (the tutorial's table layout)."""
    return [[header] + [_cell(r[key], fmt) for r in rows] for key, header, fmt in COLUMNS]


def hardware_line(rows: list[dict]) -> str:
    """The hardware, precision, backend and devices the runs share; "per model" where they differ (the table's
    rows say each)."""
    def shared(key):
        values = sorted({str(r.get(key) or "") for r in rows})
        return values[0] if len(values) == 1 else "per model"

    return (f"Hardware: {shared('hardware')}; precision {shared('precision')}; {shared('backend')}; "
            f"{shared('strategy')}")


def to_markdown(rows: list[dict], title: str) -> str:
    lines = [f"### {title}", "", "| | " + " | ".join(r["name"] for r in rows) + " |",
             "|---|" + "---:|" * len(rows)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(rows)]
    lines += ["", hardware_line(rows) + ". Training images/s excludes the first epoch; val pixel accuracy and mIoU "
              "(last epoch) leave the ignore label (void) out; the tutorial's protocol counts void as a class, on "
              "368x480 centre crops after resizing the short side to 400 (best.keras); latency: batch 1 at "
              f"{rows[0]['latency_size'][0]}x{rows[0]['latency_size'][1]}.", ""]
    return "\n".join(lines)


def plot_compare(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [("train_images_per_sec", "train images/s"), ("val_pixel_accuracy", "val pixel accuracy"),
            ("val_miou", "val mIoU"), ("train_minutes", "training minutes")]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    names = [r["name"] for r in rows]
    for ax, (key, label) in zip(axes.flat[:4], bars):
        ax.bar(names, [r[key] for r in rows], color=[f"C{i}" for i in range(len(rows))])
        ax.set_title(label)
    for ax, key, label in ((axes.flat[4], "loss", "loss"), (axes.flat[5], "miou", "mIoU")):
        for i, r in enumerate(rows):
            hist = RunFolder(r["run_dir"]).history()
            epochs = [int(h["epoch"]) + 1 for h in hist]
            for prefix, style in (("", "-"), ("val_", "--")):
                values = [number(h.get(prefix + key)) for h in hist]
                if any(v == v for v in values):
                    ax.plot(epochs, values, style, color=f"C{i}", label=f"{r['name']} {'val' if prefix else 'train'}")
        ax.set_title(f"{label} per epoch")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.suptitle(hardware_line(rows), fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def compare(models: list[str], data_dir: Path | None, out: Path, *, recipes: list[str] | None = None,
            overrides: dict | None = None, classes_file: str | Path | None = None,
            from_runs: list[Path] | None = None, latency_size: tuple[int, int] | None = None,
            progress: Progress | None = None) -> dict:
    """Train (or read) each model's run, then write compare.md / .json / .png into `out`.

    recipes: one recipe for all models or one per model; overrides: the flags every training takes (as
    segcli.recipe.resolve takes them); classes_file: the dataset's classes file; progress: where each
    training reports (as segcli.training.train does)."""
    out = Path(out)
    check_replaceable(out, True, "compare folder", kind="compare")  # a re-run replaces its own runs, nothing else
    guard_output(out, [data_dir])  # never inside the data, through links too
    ensure_writable_dir(out)
    mark_segcli_folder(out, "compare")  # its run folders are replaced when the comparison is run again
    remove_dead_writers_temp_files(out, folders=True)  # what a killed compare left: its children's job folders
    if from_runs:
        run_dirs = [Path(r) for r in from_runs]
    else:
        recipes = list(recipes or [])
        if recipes and len(recipes) not in (1, len(models)):
            raise SegcliError(f"give one --recipe for all models or one per model ({len(models)}), not {len(recipes)}")
        run_dirs = []
        for i, model in enumerate(models):
            recipe = recipes[i] if len(recipes) == len(models) else (recipes[0] if recipes else None)
            run_dir = out / f"run-{i + 1}-{model}"
            train_in_subprocess(model, data_dir, run_dir, recipe, overrides, classes_file, progress)
            run_dirs.append(run_dir)
    if latency_size is None:
        first = RunFolder(run_dirs[0])
        latency_size = tuple((first.metrics() if first.metrics_path.is_file() else {}).get("gflops_size") or (360, 480))
    rows = [summarize_run(d, latency_size) for d in run_dirs]
    title = "segcli compare: " + " vs ".join(r["name"] for r in rows)
    result = {"rows": rows, "hardware": hardware_line(rows), "data_dir": str(data_dir) if data_dir else None}
    write_json(out / "compare.json", result)
    write_text(out / "compare.md", to_markdown(rows, title))
    plot_compare(rows, out / "compare.png")
    return result
