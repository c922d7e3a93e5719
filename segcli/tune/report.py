"""The search's results, written after every trial (so a kill leaves them up to date): tune.json, tune.md,
tune.png (val mIoU against the main knobs) and best-recipe.toml (the best trial's resolved recipe, for
`segcli train --recipe`); and the rows and cells the CLI's table shares with tune.md.

Each function takes the search (segcli.tune.search: its folder, settings, knobs and starting recipe) and
KerasTuner's oracle, whose trials hold the figures each trial reported.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import tomli_w

from segcli.errors import SegcliError
from segcli.files import atomic_path, write_json, write_text
from segcli.runfolder import RunFolder
from segcli.scoring import pct
from segcli.tune.space import show_value

OBJECTIVE = "val_miou"  # the evaluation of best.keras on val (segcli evaluate's figure), maximised


def trial_metric(trial, name: str):
    """The last value of the figure `name` a KerasTuner trial reported, None when it reported none."""
    try:
        return trial.metrics.get_last_value(name) if trial.metrics.exists(name) else None
    except Exception:  # noqa: BLE001 - a trial that never reported
        return None


def trial_rows(search, oracle) -> list[dict]:
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
        miou = trial_metric(trial, OBJECTIVE)
        rows.append({"trial": run.path.name, "status": str(trial.status).lower(),
                     "knobs": {k.name: values.get(k.name) for k in search.knobs},
                     "val_miou": None if miou is None or miou != miou else miou,
                     "pixel_accuracy": trial_metric(trial, "pixel_accuracy"), "minutes": trial_metric(trial, "minutes"),
                     "epochs": epochs, "run_dir": str(run.path),
                     "error": trial.message.strip().splitlines()[-1].split("FailedTrialError: ", 1)[-1]
                     if trial.message else None})
    return rows


TABLE_COLUMNS = ("val mIoU", "pixel acc.", "minutes", "epochs")


def table_cells(row: dict, knobs: list[str]) -> list[str]:
    """A row's cells: the knobs, then TABLE_COLUMNS (for tune.md and the CLI's table alike)."""
    return ([show_value(row["knobs"].get(k)) if row["knobs"].get(k) is not None else "-" for k in knobs]
            + [pct(row["val_miou"]), pct(row["pixel_accuracy"]),
               "-" if row["minutes"] is None else f"{row['minutes']:.1f}",
               "-" if row["epochs"] is None else str(row["epochs"])])


def write_report(search, oracle, finished: bool = False) -> dict:
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


def _write_best_recipe(search, best: dict, path: Path) -> None:
    """The best trial's resolved recipe, with the recipe's own max_minutes (the search's share is not a knob)."""
    recipe = RunFolder(best["run_dir"]).recipe()
    limited = recipe.train.max_minutes
    recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train,
                                                                    max_minutes=search.base.train.max_minutes))
    knobs = ", ".join(f"{k} = {show_value(v)}" for k, v in best["knobs"].items())
    note = (f"# (the search limited the trial to {limited:.1f} min; it trained {best['epochs']} epochs)\n"
            if limited and limited != recipe.train.max_minutes else "")
    write_text(path, f"# segcli tune {search.out}: the best trial so far, {best['trial']} "
               f"(val mIoU {pct(best['val_miou'])}): {knobs}\n{note}# train with: segcli train "
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
            labels = [show_value(c) for c in knob["choices"]]
            xs = [labels.index(show_value(x)) if show_value(x) in labels else -1 for x in xs]
            ax.set_xticks(range(len(labels)), labels)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        elif knob.get("log"):
            ax.set_xscale("log")
        ax.scatter(xs, ys, color="C0")
        if best is not None:
            bx = best["knobs"].get(name)
            ax.scatter([labels.index(show_value(bx)) if "choices" in knob else bx], [100 * best["val_miou"]],
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


