"""Where does bf16 training lose accuracy? bf16 and float32 gradients of a CamVid recipe, layer by layer.

The diagnostic behind segcli's class-score head rule (segcli.precision.is_head_layer). It takes one batch and
the recipe's net (small size) with the same weights under:

- ``float32 again``: float32 a second time: the noise floor (threaded reductions are not bit-reproducible);
- ``bf16``: plain mixed_bfloat16, every layer in bf16 but the logits (as segcli built nets before the rule);
- ``bf16, BN f32``: that, with every BatchNormalization layer under the float32 policy (Keras' BN already computes
  its statistics in float32; this also keeps its output and its gradient in float32);
- ``bf16, head f32``: the class-score head in float32 (score convs, their upsampling and fusion, the logits),
  as `segcli train --precision mixed_bfloat16` builds the net now. The loss always runs in float32;
- ``bf16, BN+head f32``: both.

What it found (camvid-fcn, 128x160, batch 4): the whole bf16 gradient was 0.63 off float32's (relative error;
cosine 0.78) on a 2-core Xeon with AMX, 0.34 there with AMX off (ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16) and 0.34
on an AMD EPYC with AVX512-BF16, nearly all of it in the head's bias gradients (a dozen channels summed over
every pixel of the batch in bf16: up_final_convT/bias 0.90 off on the EPYC). With the head in float32 it was
0.04 on all three; BatchNorm in float32 changed nothing. docs/precision.md has the table.

For each variant it prints the loss and its ratio to float32, and per trainable variable the relative gradient
error ||g - g_f32|| / ||g_f32|| and the cosine similarity with the float32 gradient. Unless --no-child, it then
runs itself again in a child process with ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 (--isa), which keeps oneDNN off
its AMX kernels.

    python benchmarks/precision_layers.py                      # camvid-fcn, 128x160, batch 4: a minute or two
    python benchmarks/precision_layers.py --size 352 480 --batch 8 --json layers.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = ("float32 again", "bf16", "bf16, BN f32", "bf16, head f32", "bf16, BN+head f32")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="camvid-fcn", help="a shipped recipe name or a recipe file")
    p.add_argument("--size", type=int, nargs=2, default=(128, 160), metavar=("H", "W"),
                   help="crop size, a multiple of the net's output stride (32 for camvid-fcn)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--data", default=None, help="dataset folder (default ../shared/data/camvid, else synthetic)")
    p.add_argument("--json", default=None, help="also write every figure to this JSON file")
    p.add_argument("--isa", default="AVX512_CORE_BF16", help="ONEDNN_MAX_CPU_ISA of the child run")
    p.add_argument("--no-child", action="store_true", help="do not run again under ONEDNN_MAX_CPU_ISA")
    return p.parse_args(argv)


def one_batch(args, workdir: Path, void_as_class: bool):
    """(images float32, labels int32, classes, source): the first `batch` training pairs, centre crops."""
    from segcli.bench import BenchSettings, precision_data

    settings = replace(BenchSettings(), precision_size=tuple(args.size), precision_batch=args.batch,
                       precision_steps=1, precision_images=args.batch)
    images, labels, classes, source = precision_data(args.data, settings, workdir, void_as_class)
    return images[:args.batch].astype("float32"), labels[:args.batch].astype("int32"), classes, source


def policy_copy(model, name: str, float32_layers: set[str]):
    """The model under policy `name` with the layers in `float32_layers` and the logits under float32, every
    other layer under `name` (the head rule of segcli's builders undone where the head is not listed), the
    same weights."""
    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] != "InputLayer":
            keep = layer["config"].get("name") in float32_layers | {"logits"}
            layer["config"]["dtype"] = "float32" if keep else name
    copy = type(model).from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def gradients(model, loss_fn, x, y):
    import tensorflow as tf

    @tf.function  # a graph, as model.fit runs the step (grappler's rewrites included)
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = loss_fn(y, logits)
        return loss, tape.gradient(loss, model.trainable_variables)

    loss, grads = step(x, y)
    return float(loss), [g.numpy().astype("float64") for g in grads]


def compare(ref, got):
    import numpy as np

    a, b = ref.ravel(), got.ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    rel = float(np.linalg.norm(b - a)) / na if na else math.nan
    cos = float(a @ b) / (na * nb) if na and nb else math.nan
    return rel, cos


def run(args) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from segcli import recipe as recipes
    from segcli.models import build_model
    from segcli.precision import cpu_bf16, is_head_layer
    from segcli.system import cpu_name
    from segcli.training.losses import make_loss

    recipe = recipes.resolve(recipes.find_recipe(args.recipe))
    data_cfg, train_cfg, model_cfg = recipe.data, recipe.train, recipe.model
    with tempfile.TemporaryDirectory(prefix="precision-layers-") as tmp:
        x, y, classes, source = one_batch(args, Path(tmp), data_cfg.void_as_class)
    k = classes.num_classes
    keras.utils.set_random_seed(train_cfg.seed)
    model = build_model(model_cfg.name, k, **model_cfg.options)
    loss_fn = make_loss(train_cfg.loss, k, classes.ignore_index, None, train_cfg.label_smoothing)
    bn = {layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}
    head = {layer.name for layer in model.layers if is_head_layer(layer.name)}
    names = [v.path for v in model.trainable_variables]
    shapes = [list(v.shape) for v in model.trainable_variables]
    x, y = tf.constant(x), tf.constant(y)

    start = time.perf_counter()
    loss0, g0 = gradients(model, loss_fn, x, y)
    results = {}
    for variant in VARIANTS:
        if variant == "float32 again":
            copy = type(model).from_config(model.get_config())
            copy.set_weights(model.get_weights())
        else:
            keep = (bn if "BN" in variant else set()) | (head if "head" in variant else set())
            copy = policy_copy(model, "mixed_bfloat16", keep)
        t = time.perf_counter()
        loss, g = gradients(copy, loss_fn, x, y)
        per = [compare(a, b) for a, b in zip(g0, g)]
        whole = compare(np.concatenate([a.ravel() for a in g0]), np.concatenate([b.ravel() for b in g]))
        results[variant] = {"loss": loss, "loss_ratio": loss / loss0, "rel_error": [r for r, _ in per],
                            "cosine": [c for _, c in per], "whole_rel_error": whole[0], "whole_cosine": whole[1],
                            "seconds": time.perf_counter() - t}
        del copy
    return {"recipe": args.recipe, "model": model_cfg.name, "size": list(args.size), "batch": args.batch,
            "data": source, "classes": k, "cpu": cpu_name(), "cpu_bf16": cpu_bf16(),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"), "tensorflow": tf.__version__,
            "loss_float32": loss0, "variables": names, "shapes": shapes,
            "grad_norm": [float(np.linalg.norm(g)) for g in g0], "bn_layers": sorted(bn), "head_layers": sorted(head),
            "variants": results, "seconds": time.perf_counter() - start}


def print_report(r: dict) -> None:
    isa = r["onednn_max_cpu_isa"] or "default"
    print(f"{r['recipe']} ({r['model']}), {r['size'][0]}x{r['size'][1]}, batch {r['batch']}, one batch of "
          f"{r['data']}; CPU {r['cpu']} (bf16: {r['cpu_bf16'] or 'none, emulated'}), ONEDNN_MAX_CPU_ISA {isa}, "
          f"TensorFlow {r['tensorflow']}")
    print(f"head layers (float32 in 'head f32'): {', '.join(r['head_layers'])}")
    print("\nper trainable variable: relative gradient error ||g - g_f32|| / ||g_f32||  and  cosine with g_f32")
    variants = [v for v in VARIANTS if v in r["variants"]]
    width = max(len(n) for n in r["variables"])
    print(f"{'variable':<{width}} {'shape':>16} {'|g_f32|':>9} " + " ".join(f"{v:>18}" for v in variants))
    for i, (name, shape) in enumerate(zip(r["variables"], r["shapes"])):
        cells = " ".join(f"{r['variants'][v]['rel_error'][i]:8.4f} {r['variants'][v]['cosine'][i]:9.6f}"
                         for v in variants)
        print(f"{name:<{width}} {'x'.join(map(str, shape)):>16} {r['grad_norm'][i]:9.2e} {cells}")
    print(f"\nloss float32 {r['loss_float32']:.5f}")
    print(f"{'variant':<18} {'loss':>9} {'loss ratio':>10} {'grad rel err':>12} {'grad cosine':>11} "
          f"{'worst layer rel err':>30} {'s':>6}")
    for v in variants:
        d = r["variants"][v]
        worst = max(range(len(d["rel_error"])), key=lambda i: d["rel_error"][i])
        print(f"{v:<18} {d['loss']:9.5f} {d['loss_ratio']:10.5f} {d['whole_rel_error']:12.5f} "
              f"{d['whole_cosine']:11.7f} {r['variables'][worst][-22:]:>22} {d['rel_error'][worst]:7.4f} "
              f"{d['seconds']:6.1f}")


def main(argv=None) -> int:
    args = parse_args(argv)
    child = os.environ.get("SEGCLI_PRECISION_LAYERS_CHILD") == "1"
    result = run(args)
    if child:
        Path(args.json).write_text(json.dumps(result))
        return 0
    print_report(result)
    if not args.no_child:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "child.json"
            cmd = [sys.executable, __file__, "--recipe", args.recipe, "--size", *map(str, args.size), "--batch",
                   str(args.batch), "--json", str(out)] + (["--data", args.data] if args.data else [])
            env = {**os.environ, "ONEDNN_MAX_CPU_ISA": args.isa, "SEGCLI_PRECISION_LAYERS_CHILD": "1",
                   "TF_CPP_MIN_LOG_LEVEL": "3"}
            print(f"\nagain in a child process with ONEDNN_MAX_CPU_ISA={args.isa} ...", flush=True)
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode or not out.is_file():
                print(f"child failed (exit {done.returncode}): {(done.stderr.strip().splitlines() or [''])[-1]}")
            else:
                other = json.loads(out.read_text())
                result["child"] = other
                print(f"{'variant':<18} {'grad rel err':>13} {'(default ISA)':>13} {'loss ratio':>11} "
                      f"{'(default ISA)':>13}")
                for v in VARIANTS:
                    a, b = other["variants"][v], result["variants"][v]
                    print(f"{v:<18} {a['whole_rel_error']:13.5f} {b['whole_rel_error']:13.5f} "
                          f"{a['loss_ratio']:11.5f} {b['loss_ratio']:13.5f}")
                print(f"float32 loss {other['loss_float32']:.5f} under {args.isa} against "
                      f"{result['loss_float32']:.5f} by default")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
