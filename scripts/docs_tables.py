"""Write every generated table of README.md, docs/*.md and models/README.md from the JSON files that hold the
figures, between `<!-- NAME:start -->` and `<!-- NAME:end -->` markers.

    python scripts/docs_tables.py            # rewrite the tables
    python scripts/docs_tables.py --check    # change nothing; exit 1 naming each stale table (the tests run this)

The sources, by marker NAME:
- `bench-cpu`: docs/bench.json, as `segcli bench` prints it (segcli.cli.render.bench_text);
- `camvid-compare`: docs/camvid-compare.json, as `segcli compare` writes compare.md (segcli.compare.to_markdown);
- `gpu-KEY`: the KEY run in docs/bench-gpu-h100.json, as benchmarks/bench_keras_backend.py writes its markdown;
- `results/NAME`: docs/results/NAME.json, a table of figures written down from runs whose own JSON was not kept
  (or of rows read from models/*.metrics.json), with the CPU, precision and command it came from.

A measured figure goes into its JSON file, never into the markdown: edit the JSON, run this script.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

MARKER = re.compile(r"(<!-- (?P<name>[\w./-]+):start -->\n)(?P<body>.*?)(<!-- (?P=name):end -->)", re.S)


def markdown_files(root: Path) -> list[Path]:
    return [root / "README.md", root / "models" / "README.md", *sorted((root / "docs").glob("*.md"))]


# --- the renderers ------------------------------------------------------------------------------------------------

def bench_cpu(root: Path) -> str:
    from segcli.cli.render import bench_text

    result = json.loads((root / "docs" / "bench.json").read_text())
    # docs/bench.json was written before bench ran on other backends: TensorFlow ran it, and its one input
    # pipeline was tf.data (the engine is "tfdata" in today's JSON)
    system = result["system"]
    system.setdefault("backend", "tensorflow")
    system.setdefault("backend_version", f"tensorflow {system.get('tensorflow', '')}".strip())
    if isinstance(result.get("pipeline_images_per_sec"), (int, float)):
        result["pipeline_images_per_sec"] = {"tfdata": result["pipeline_images_per_sec"]}
    return bench_text(result)


def camvid_compare(root: Path) -> str:
    from segcli.compare import to_markdown

    result = json.loads((root / "docs" / "camvid-compare.json").read_text())
    rows = [{"backend": "tensorflow", **row} for row in result["rows"]]  # as compare reads a run without one
    return to_markdown(rows, "segcli compare: " + " vs ".join(r["name"] for r in rows))


def gpu(root: Path, key: str) -> str:
    from bench_keras_backend import markdown

    return markdown(json.loads((root / "docs" / "bench-gpu-h100.json").read_text())[key])


def metrics_fields(path: Path) -> dict:
    """The figures of a run's metrics.json (models/*.metrics.json) under the names a results table uses."""
    m = json.loads(path.read_text())
    e = m["evaluation"]
    return {"epochs": m["epochs"], "train_minutes": m["train_seconds"] / 60,
            "images_per_sec": m["train_images_per_sec"], "miou": e["miou"], "pixel_accuracy": e["pixel_accuracy"],
            "tutorial_pixel_accuracy": e["tutorial_pixel_accuracy"], "iou": e["iou"], "cpu": m["hardware"],
            "precision": m["precision"], "backend": m["backend"], "best_epoch": m["best_epoch"]}


def compare_fields(path: Path, name: str) -> dict:
    """One model's row of a `segcli compare` JSON (docs/camvid-compare.json) under a results table's names; its
    mIoU and pixel accuracy are the last epoch's val figures, not best.keras's."""
    row = next(r for r in json.loads(path.read_text())["rows"] if r["name"] == name)
    return {"epochs": row["epochs"], "train_minutes": row["train_minutes"], "images_per_sec": row["train_images_per_sec"],
            "miou": row["val_miou"], "pixel_accuracy": row["val_pixel_accuracy"],
            "tutorial_pixel_accuracy": row["tutorial_pixel_accuracy"], "cpu": row["hardware"],
            "precision": row["precision"]}


def source_fields(root: Path, row: dict) -> dict:
    """The figures a results row reads from a run's file: "metrics": PATH, or "compare": [PATH, MODEL]."""
    if "metrics" in row:
        return metrics_fields(root / row["metrics"])
    if "compare" in row:
        return compare_fields(root / row["compare"][0], row["compare"][1])
    return {}


def lookup(row: dict, key: str):
    value = row
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


FORMATS = {
    "text": lambda v: str(v),
    "code": lambda v: f"`{v}`",
    "int": lambda v: f"{v:,.0f}",
    "f1": lambda v: f"{v:,.1f}",
    "f2": lambda v: f"{v:.2f}",
    "pct": lambda v: f"{100 * v:.1f}%",   # a fraction shown in percent
    "pct2": lambda v: f"{100 * v:.2f}%",
    "iou": lambda v: f"{100 * v:.1f}",    # a per-class IoU, in percent without the sign
    "min": lambda v: f"{v:.1f} min",
    "x": lambda v: f"{v:.2f}x",
}


def cell(row: dict, column: dict) -> str:
    value = lookup(row, column["key"])
    text = "" if value is None else FORMATS[column.get("format", "text")](value)
    return f"**{text}**" if text and column["key"] in row.get("bold", ()) else text


def results_table(root: Path, name: str) -> str:
    """docs/results/NAME.json: {"columns": [{"key", "title", "format"}], "rows": [...], "cpu", "precision",
    "command", "date", "note"}. A row may name a run's file ("metrics": a metrics.json, "compare": [a compare.json,
    a model]) whose figures fill the keys the row does not give."""
    spec = json.loads((root / "docs" / "results" / f"{name}.json").read_text())
    columns = spec["columns"]
    rows = [{**source_fields(root, row), **row} for row in spec["rows"]]
    right = {"int", "f1", "f2", "pct", "pct2", "iou", "min", "x"}
    lines = ["| " + " | ".join(c["title"] for c in columns) + " |",
             "| " + " | ".join("---:" if c.get("format") in right else "---" for c in columns) + " |"]
    lines += ["| " + " | ".join(cell(row, c) for c in columns) + " |" for row in rows]
    facts = [f"{label}: {spec[key]}" for key, label in (("cpu", "CPU"), ("precision", "precision"),
                                                         ("backend", "backend"), ("date", "measured"))
             if spec.get(key)]
    footer = "; ".join(facts)
    if spec.get("command"):
        footer += ("; " if footer else "") + f"command: `{spec['command']}`"
    if spec.get("note"):
        footer += (". " if footer else "") + spec["note"]
    return "\n".join(lines) + ("\n\n" + footer.rstrip(".") + "." if footer else "") + "\n"


def render(root: Path, name: str) -> str:
    if name == "bench-cpu":
        return bench_cpu(root)
    if name == "camvid-compare":
        return camvid_compare(root)
    if name.startswith("gpu-"):
        return gpu(root, name[len("gpu-"):])
    if name.startswith("results/"):
        return results_table(root, name[len("results/"):])
    raise SystemExit(f"unknown table <!-- {name}:start --> (see scripts/docs_tables.py)")


# --- the files ----------------------------------------------------------------------------------------------------

def rendered(root: Path, text: str) -> tuple[str, list[str]]:
    """The file's text with each table rewritten, and the names of the tables that changed."""
    changed = []

    def replace(match):
        body = render(root, match["name"]).rstrip("\n") + "\n"
        if body != match["body"]:
            changed.append(match["name"])
        return match.group(1) + body + match.group(4)

    return MARKER.sub(replace, text), changed


def stale_tables(root: Path = ROOT, *, write: bool = False) -> list[str]:
    """'FILE: NAME' for each table that differs from its JSON; with write=True, rewrite those files."""
    from segcli.files import write_text

    stale, used = [], set()
    for path in markdown_files(root):
        if not path.is_file():
            continue
        text = path.read_text()
        used.update(m["name"] for m in MARKER.finditer(text))
        new, changed = rendered(root, text)
        stale += [f"{path.relative_to(root)}: {name}" for name in changed]
        if write and new != text:
            write_text(path, new)
    unused = [p for p in sorted((root / "docs" / "results").glob("*.json")) if f"results/{p.stem}" not in used]
    stale += [f"{p.relative_to(root)}: in no table" for p in unused]
    return stale


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is stale")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this checkout)")
    args = parser.parse_args(argv)
    stale = stale_tables(args.root, write=not args.check)
    if args.check and stale:
        for line in stale:
            print(f"stale table: {line}", file=sys.stderr)
        print("run: python scripts/docs_tables.py", file=sys.stderr)
        return 1
    for line in stale:
        print(f"{'unused' if line.endswith('in no table') else 'written'}: {line}")
    return 1 if any(line.endswith("in no table") for line in stale) else 0


if __name__ == "__main__":
    raise SystemExit(main())
