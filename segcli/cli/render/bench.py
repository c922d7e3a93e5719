"""What `segcli bench` shows: its result (segcli.bench.run_bench's dict) as lines and tables (`bench_parts`), on
the console or as plain text for a markdown page (`bench_text`), and its progress lines.
"""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table
from rich.text import Text

from segcli.cli.render.consoles import console, err_console
from segcli.scoring import pct


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
    if result.get("engines"):
        e = result["engines"]
        out.append(_bench_table(
            f"predict images/s per engine ({e['model']}, {e['size'][0]}x{e['size'][1]}, batch {e['batch']}, "
            f"{e['precision']})",
            ("engine", "runtime", "images/s", "x Keras", "masks = Keras"),
            [(r["engine"], r["runtime"], _bench_fig(r["images_per_sec"]), _bench_fig(r["speedup"], ".2f"),
              f"{100 * r['agreement']:.2f}%") for r in e["rows"]],
            right=("images/s", "x Keras", "masks = Keras"),
            caption="the same images through segcli predict's path (padded to the output stride), each engine "
                    "running its export of the model" + "".join(f"; {line}" for line in e["not_installed"])))
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
    """The bench tables as plain text 110 columns wide, in a fenced block (for a markdown page)."""
    buffer = io.StringIO()
    plain = Console(file=buffer, width=110, color_system=None)
    for part in bench_parts(result):
        plain.print(part, highlight=False, soft_wrap=True)
    return "```text\n" + buffer.getvalue().rstrip() + "\n```\n"


def figures_written(path) -> None:
    console.print(f"figures written to {path}", highlight=False, markup=False)
