"""What the CLI shows: the consoles, every table, progress bar and report line (the one package that uses rich).

Each function takes what a library function returned and prints it; the command modules parse and call.
What the library reports while it works (segcli.progress) is shown by `RichProgress`.

The modules: `consoles` (the consoles, `RichProgress`, error lines), `commands` (each command's output
but bench's) and `bench` (the benchmark's tables); the command modules call them as `render.NAME`.
"""

from segcli.cli.render.bench import bench_parts, bench_progress, bench_tables, bench_text, figures_written
from segcli.cli.render.commands import (comparison, data_report, evaluation, export_result, model_facts, models_table,
                                        overlay_written, predictions_written, train_interrupted, train_other_process,
                                        trained_model_facts, train_summary, tune_interrupted, tune_summary,
                                        videos_written)
from segcli.cli.render.consoles import RichProgress, console, err_console, error, interrupted, usage_error

__all__ = ["RichProgress", "console", "err_console", "error", "interrupted", "usage_error", "comparison",
           "data_report", "evaluation", "export_result", "model_facts", "models_table", "overlay_written",
           "predictions_written", "trained_model_facts", "train_interrupted", "train_other_process", "train_summary",
           "tune_interrupted", "tune_summary", "videos_written", "bench_parts", "bench_progress", "bench_tables",
           "bench_text", "figures_written"]
