"""Does bf16 train like float32 here, and how much faster? The class-score head rule and BatchNorm's share.

1. `segcli bench`'s precision section (segcli.bench.fitting.precision_curves: the recipe's net, optimizer, loss
   and schedule, 200 steps at 192x256 from the same weights and batches in float32 and in mixed_bfloat16) for
   each recipe, as segcli builds it (the class-score head in float32), and with --plain also with the head in
   bf16 (only the logits float32, as before the rule): the loss ratio bf16 / float32 over the last half of the
   steps and images/s of each.
2. --bn: the step time of each recipe's net (train_on_batch, Adam, Keras' cross-entropy; 192x256, batch 8,
   random data) in float32 and in mixed_bfloat16, with and without BatchNorm, in alternating rounds. Keras'
   BatchNormalization computes in float32 under a mixed policy (it casts its bf16 input up and its output down),
   so its cost does not fall with bf16; the difference of the two nets' step times is what it costs.

    python benchmarks/bf16_head.py --recipes camvid-fcn,camvid-unet --plain --bn --json bf16.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def curves(recipe: str, data: str | None, plain: bool) -> dict:
    import segcli.models.blocks as blocks
    from segcli.bench import BenchSettings
    from segcli.bench.fitting import precision_curves

    rule = blocks._head
    if plain:  # the head in the global policy: bf16 under mixed_bfloat16, the logits still float32
        blocks._head = lambda name: "float32" if name == "logits" else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            r = precision_curves(replace(BenchSettings(), precision_recipe=recipe), data, tmp)
    finally:
        blocks._head = rule
    return {"recipe": recipe, "head": "bf16" if plain else "float32", "cpu": r["cpu"], "cpu_bf16": r["cpu_bf16"],
            "loss_ratio_last_half": r["ratio_mean_last_half"], "images_per_sec": r["images_per_sec"],
            "speedup": r["images_per_sec"]["mixed_bfloat16"] / r["images_per_sec"]["float32"], "curves": r["curves"]}


def bn_cost(recipe: str, rounds: int = 2, steps: int = 8) -> dict:
    import keras
    import numpy as np

    from segcli import recipe as recipes
    from segcli.models import build_model
    from segcli.precision import policy

    r = recipes.resolve(recipes.find_recipe(recipe))
    x = np.random.default_rng(0).uniform(0, 255, (8, 192, 256, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, 12, (8, 192, 256)).astype("int32")
    times = {}
    for _ in range(rounds):
        for bn in (True, False):
            for name in ("float32", "mixed_bfloat16"):
                with policy(name):
                    model = build_model(r.model.name, 12, **{**r.model.options, "batch_norm": bn})
                model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
                model.train_on_batch(x, y)
                model.train_on_batch(x, y)
                start = time.perf_counter()
                for _ in range(steps):
                    model.train_on_batch(x, y)
                times.setdefault(f"{'bn' if bn else 'no bn'} {name}", []).append((time.perf_counter() - start) / steps)
    ms = {key: 1000 * min(v) for key, v in times.items()}  # the best round: the least disturbed
    return {"recipe": recipe, "ms_per_step": ms,
            "bn_ms": {p: ms[f"bn {p}"] - ms[f"no bn {p}"] for p in ("float32", "mixed_bfloat16")},
            "speedup": {kind: ms[f"{kind} float32"] / ms[f"{kind} mixed_bfloat16"] for kind in ("bn", "no bn")}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", default="camvid-fcn,camvid-unet")
    p.add_argument("--data", default="../shared/data/camvid", help="dataset (synthetic PNGs when absent)")
    p.add_argument("--plain", action="store_true", help="also the curves with the head in bf16")
    p.add_argument("--bn", action="store_true", help="also BatchNorm's share of the step time")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    data = args.data if Path(args.data).is_dir() else None
    out = {"curves": [], "bn": []}
    for recipe in args.recipes.split(","):
        for plain in (False, True) if args.plain else (False,):
            c = curves(recipe, data, plain)
            out["curves"].append(c)
            print(f"{recipe}, head {c['head']}: loss ratio {c['loss_ratio_last_half']:.4f}, images/s float32 "
                  f"{c['images_per_sec']['float32']:.1f}, bf16 {c['images_per_sec']['mixed_bfloat16']:.1f} "
                  f"({c['speedup']:.2f}x); CPU {c['cpu']} ({c['cpu_bf16']})", flush=True)
        if args.bn:
            b = bn_cost(recipe)
            out["bn"].append(b)
            print(f"{recipe} ms/step: " + ", ".join(f"{k} {v:.0f}" for k, v in b["ms_per_step"].items())
                  + f"; BatchNorm float32 {b['bn_ms']['float32']:.0f} ms, bf16 {b['bn_ms']['mixed_bfloat16']:.0f} ms",
                  flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
