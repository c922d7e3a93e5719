"""segcli's bare fit and the PyTorch reference of the same net, timed in turns in one process, so that both
see the same machine: on a shared CPU whose speed drifts by 30% from minute to minute, `segcli bench`'s two
sections (minutes apart) give ratios from 1.2 to 1.5 for the same code. Here each round times `--steps` steps
of segcli (TensorFlow, the bench's fit with the loss only: `compile_for_training`, one cached batch, 368x480,
batch 16) and then as many of `torch.compile`d PyTorch (benchmarks/torch_reference.py); a round's ratio is
segcli's images/s over PyTorch's, and the median ratio over the rounds is the figure.

    OMP_WAIT_POLICY=passive python benchmarks/paired_torch.py [--models lambda-fcn lambda-unet] [--rounds 6]
        [--steps 3] [--mode compiled|eager] [--size 368 480] [--batch 16] [--json out.json]

TensorFlow's and PyTorch's threads take turns (OMP_WAIT_POLICY=passive: PyTorch's OpenMP threads sleep
between its steps instead of spinning against TensorFlow's). float32 only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def segcli_step(model_name: str, batch: int, size: tuple[int, int]):
    """One step of segcli's bare fit (loss only, as the bench's `fit_plain`) on one cached batch: a function
    that trains one step and returns the loss, synchronously."""
    import tensorflow as tf

    from segcli.bench import BenchSettings, fit_model, random_batch
    from segcli.training.compile import compile_for_training

    model, recipe, classes, strategy = fit_model(model_name, "float32", BenchSettings(train_size=size,
                                                                                      batch_size=batch), jit=False)
    compile_for_training(model, recipe, classes, 1, strategy=strategy, metrics=False, gpu=False)
    x, y = (tf.constant(a) for a in random_batch(batch, size, classes.num_classes))
    return lambda: float(model.train_on_batch(x, y))


def time_steps(step, steps: int, batch: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    float(loss.detach() if hasattr(loss, "detach") else loss)  # torch: waits for the step
    return steps * batch / (time.perf_counter() - start)


def paired(model_name: str, *, rounds: int, steps: int, mode: str, batch: int = 16, size=(368, 480)) -> dict:
    import torch_reference

    ours = segcli_step(model_name, batch, size)
    theirs, _, why = torch_reference.trainer(model_name, mode=mode, size=size, batch=batch, device="cpu")
    if why:
        raise SystemExit(why)
    for _ in range(2):  # tracing / compiling, first allocations
        ours(), theirs()
    seg, ref = [], []
    for _ in range(rounds):
        seg.append(time_steps(ours, steps, batch))
        ref.append(time_steps(theirs, steps, batch))
    ratios = [a / b for a, b in zip(seg, ref)]
    return {"model": model_name, "mode": mode, "segcli": seg, "torch": ref, "ratios": ratios,
            "median_ratio": statistics.median(ratios), "segcli_median": statistics.median(seg),
            "torch_median": statistics.median(ref)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["lambda-fcn", "lambda-unet"])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--mode", default="compiled", choices=("compiled", "eager"))
    ap.add_argument("--size", type=int, nargs=2, default=[368, 480], metavar=("H", "W"))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    from segcli.backend import version
    from segcli.system import hardware_summary

    import torch

    head = {"hardware": hardware_summary(), "backend": version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "rounds": args.rounds, "steps": args.steps,
            "size": list(args.size), "batch": args.batch, "mode": args.mode}
    print("; ".join(f"{k} {v}" for k, v in head.items()))
    rows = []
    for name in args.models:
        row = paired(name, rounds=args.rounds, steps=args.steps, mode=args.mode, batch=args.batch,
                     size=tuple(args.size))
        rows.append(row)
        print(f"{name}: segcli {row['segcli_median']:.2f}, torch {args.mode} {row['torch_median']:.2f} images/s; "
              f"ratio per round " + " ".join(f"{r:.2f}" for r in row["ratios"]) + f"; median {row['median_ratio']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({**head, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # segcli from this checkout
    sys.path.insert(0, str(ROOT / "benchmarks"))
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import segcli  # noqa: F401  (before TensorFlow: its oneDNN kernels, segcli.backend.prefer_onednn)

    raise SystemExit(main())
