"""A PyTorch reference of segcli's tutorial nets (`lambda-fcn`, `lambda-unet`): training images/s in plain
torch.nn, eager and `torch.compile`d, for the same shapes, loss and optimizer as `segcli bench`'s bare fit.

The nets match segcli/models (fcn.py, unet.py, blocks.py as registered for the lambda recipes) layer for
layer: the input rescaled to -1..1 inside; four 4x4 stride-2 convs (32, 64, 128, 256 filters, "same" padding,
ReLU, with bias, no BatchNorm); three 4x4 stride-2 transposed convs (128, 64, 32, ReLU) and one to the
classes (linear). The U-Net concatenates [encoder map, decoder map] after each of the first three transposed
convs. Same parameter counts as Keras (1,384,652 and 1,554,636 with 12 classes; `count_params`).

Training as the bench's fit: one cached batch on the device (batch 16, 368x480, 12 classes; the labels
random, `ignore_index` = the classes count, as segcli's loss ignores padding), mean cross-entropy over the
pixels, Adam 1.29e-3 (eps 1e-7, as Keras'). Channels-last memory. bf16 autocast only where the CPU computes
bf16 natively (segcli.precision.cpu_has_bf16), float16 autocast with loss scaling on a GPU. `torch.compile`'s
first steps (compiling) are timed apart from the steady state.

    python benchmarks/torch_reference.py [--models lambda-fcn lambda-unet] [--size 368 480] [--batch 16]
        [--steps 10] [--repeats 4] [--modes eager compiled] [--precisions float32 mixed_bfloat16] [--json out.json]

`segcli bench` runs `run_reference(spec)` in a child process (section `torch`) and prints it beside its fit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

MODELS = ("lambda-fcn", "lambda-unet")
MODES = ("eager", "compiled")
FILTERS = (32, 64, 128, 256)  # segcli.models: lambda-fcn filters, lambda-unet base_filters 32 x 2**i, depth 4
LR, EPS = 1.29e-3, 1e-7       # the lambda recipes' Adam; Keras' epsilon


def build(name: str, num_classes: int):
    """The torch.nn net of a lambda recipe (NCHW float RGB 0..255 in, float32 logits (N, classes, H, W) out)."""
    import torch
    from torch import nn

    def down(cin, cout):  # Conv2D(4, strides=2, padding="same"): for even sizes Keras pads 1 on each side
        return nn.Conv2d(cin, cout, 4, stride=2, padding=1)

    def up(cin, cout):  # Conv2DTranspose(4, strides=2, padding="same"): output 2x the input
        return nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)

    class LambdaNet(nn.Module):
        def __init__(self, skips: bool):
            super().__init__()
            self.skips = skips
            widths = (3, *FILTERS)
            self.enc = nn.ModuleList(down(widths[i], widths[i + 1]) for i in range(len(FILTERS)))
            dec, cin = [], FILTERS[-1]
            for f in reversed(FILTERS[:-1]):  # 128, 64, 32
                dec.append(up(cin, f))
                cin = 2 * f if skips else f  # the concat [encoder, decoder] doubles the width
            self.dec = nn.ModuleList(dec)
            self.final = up(cin, num_classes)

        def forward(self, x):
            x = x * (1 / 127.5) - 1.0  # layers.Rescaling(1 / 127.5, offset=-1)
            feats = []
            for conv in self.enc:
                x = torch.relu(conv(x))
                feats.append(x)
            for i, conv in enumerate(self.dec):
                x = torch.relu(conv(x))
                if self.skips:
                    x = torch.cat([feats[-2 - i], x], dim=1)
            return self.final(x).float()  # logits in float32, as the Keras models' last layer

    if name not in MODELS:
        raise ValueError(f"no torch reference of {name!r}; references: {', '.join(MODELS)}")
    return LambdaNet(skips=name == "lambda-unet")


def count_params(net) -> int:
    return int(sum(p.numel() for p in net.parameters()))


def copy_keras_weights(net, model) -> None:
    """Load the weights of the Keras model of the same recipe into `net` (to check that both compute the same):
    its Conv2D kernels (kh, kw, in, out) and Conv2DTranspose kernels (kh, kw, out, in), in layer order."""
    import numpy as np
    import torch

    layers = [layer for layer in model.layers if layer.weights and layer.trainable]
    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    if len(layers) != len(convs):
        raise ValueError(f"{len(layers)} Keras layers with weights, {len(convs)} torch convs")
    with torch.no_grad():
        for layer, conv in zip(layers, convs):
            kernel, bias = (np.asarray(w) for w in layer.get_weights())
            # Conv2d weight: (out, in, kh, kw); ConvTranspose2d weight: (in, out, kh, kw)
            conv.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
            conv.bias.copy_(torch.from_numpy(bias))


def _native_bf16() -> bool:
    """segcli.precision.cpu_has_bf16 (run_reference's spec carries the parent's answer, so that the child
    imports no segcli)."""
    from segcli.precision import cpu_has_bf16

    return cpu_has_bf16()


def autocast_dtype(precision: str, device: str, native_bf16: bool | None = None) -> tuple[object, str | None]:
    """(torch autocast dtype or None, why this precision is not run here or None) for a Keras policy name."""
    import torch

    if precision == "float32":
        return None, None
    if precision == "mixed_bfloat16":
        if device == "cpu" and not (_native_bf16() if native_bf16 is None else native_bf16):
            return None, "no native bf16 on this CPU (autocast would emulate it, many times slower)"
        return torch.bfloat16, None
    if precision == "mixed_float16":
        if device == "cpu":
            return None, "float16 autocast is for GPUs"
        return torch.float16, None
    return None, f"unknown precision {precision!r}"


def _device(device: str | None) -> str:
    """The device asked for, else the GPU where there is one, else the CPU."""
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def trainer(name: str, *, mode: str, precision: str = "float32", size=(368, 480), batch: int = 16,
            num_classes: int = 12, seed: int = 0, device: str | None = None, native_bf16: bool | None = None):
    """(step, net, why): `step()` trains the reference net one step on one cached batch and returns the loss
    tensor; why (str) instead, with step and net None, where this machine cannot run the precision."""
    import torch
    import torch.nn.functional as F

    device = _device(device)
    dtype, why = autocast_dtype(precision, device, native_bf16)
    if why:
        return None, None, why
    torch.manual_seed(seed)
    net = build(name, num_classes).to(device).to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    x = (torch.rand(batch, 3, h, w, generator=gen) * 255).to(device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch, h, w), generator=gen).to(device)

    class WithLoss(torch.nn.Module):  # the loss compiled with the net (as Keras' train step holds both)
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, images, labels):
            with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
                logits = self.net(images)
            return F.cross_entropy(logits, labels, ignore_index=num_classes)

    step_fn = WithLoss()
    if mode == "compiled":
        step_fn = torch.compile(step_fn)
    elif mode != "eager":
        raise ValueError(f"unknown mode {mode!r}; modes: {', '.join(MODES)}")
    opt = torch.optim.Adam(net.parameters(), lr=LR, eps=EPS)
    scaler = torch.amp.GradScaler(device, enabled=dtype is torch.float16)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = step_fn(x, y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss

    return step, net, None


def train_rate(name: str, *, mode: str, precision: str = "float32", size=(368, 480), batch: int = 16,
               num_classes: int = 12, steps: int = 10, repeats: int = 4, warmup: int = 2, seed: int = 0,
               device: str | None = None, native_bf16: bool | None = None) -> dict:
    """Images/s of `steps` training steps on one cached batch (the median of `repeats` timed runs), after
    `warmup` steps; `compile_seconds`: the first step of a compiled net (tracing, compiling, running)."""
    device = _device(device)
    row = {"model": name, "mode": mode, "precision": precision, "device": device}
    step, net, why = trainer(name, mode=mode, precision=precision, size=size, batch=batch, num_classes=num_classes,
                             seed=seed, device=device, native_bf16=native_bf16)
    if why:
        return {**row, "skipped": why}
    start = time.perf_counter()
    loss = step()  # eager: first allocations; compiled: tracing + compiling the forward and backward graphs
    first = float(loss.detach())
    _sync(device)
    row["first_step_seconds"] = time.perf_counter() - start
    for _ in range(warmup):
        step()
    _sync(device)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            loss = step()
        last = float(loss.detach())  # waits for the device
        _sync(device)
        rates.append(steps * batch / (time.perf_counter() - start))
    if not (last == last and first == first):
        raise FloatingPointError(f"{name} {mode} {precision}: the loss is NaN")
    row.update(images_per_sec=statistics.median(rates), epochs_images_per_sec=rates, loss_first=first,
               loss_last=last, params=count_params(net))
    return row


def run_reference(spec: dict) -> dict:
    """spec: models, modes, precisions, size [h, w], batch, classes, steps, repeats, warmup, threads, device,
    native_bf16 (the CPU's, segcli.precision.cpu_has_bf16; asked here when absent) (all optional). The
    JSON-ready figures: torch's version, the device, threads, one row per model x precision x mode (a row the
    machine cannot run carries "skipped": why; a failing one "error")."""
    import torch

    models = list(spec.get("models", MODELS))
    modes = list(spec.get("modes", MODES))
    precisions = list(spec.get("precisions", ["float32"]))
    size = tuple(spec.get("size", (368, 480)))
    device = _device(spec.get("device"))
    native_bf16 = spec.get("native_bf16")
    native_bf16 = _native_bf16() if native_bf16 is None and device == "cpu" else native_bf16
    if "threads" in spec:
        torch.set_num_threads(int(spec["threads"]))
    rows = []
    for name in models:
        if name not in MODELS:
            rows += [{"model": name, "mode": mode, "precision": precision, "device": device,
                      "skipped": f"no PyTorch reference of {name} (only {', '.join(MODELS)})"}
                     for precision in precisions for mode in modes]
            continue
        for precision in precisions:
            for mode in modes:
                try:
                    rows.append(train_rate(name, mode=mode, precision=precision, size=size,
                                           batch=int(spec.get("batch", 16)), num_classes=int(spec.get("classes", 12)),
                                           steps=int(spec.get("steps", 10)), repeats=int(spec.get("repeats", 4)),
                                           warmup=int(spec.get("warmup", 2)), device=device,
                                           native_bf16=native_bf16))
                except Exception as exc:  # noqa: BLE001  (one failing mode must not lose the others' figures)
                    text = (str(exc).strip().splitlines() or [""])[0]
                    rows.append({"model": name, "mode": mode, "precision": precision, "device": device,
                                 "error": f"{type(exc).__name__}: {text}"[:300]})
    return {"torch": torch.__version__, "device": device if device == "cpu" else torch.cuda.get_device_name(0),
            "threads": torch.get_num_threads(), "native_bf16": native_bf16, "size": list(size),
            "batch": int(spec.get("batch", 16)), "classes": int(spec.get("classes", 12)),
            "steps": int(spec.get("steps", 10)), "repeats": int(spec.get("repeats", 4)), "rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"])
    ap.add_argument("--size", type=int, nargs=2, default=[368, 480])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--classes", type=int, default=12)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    spec = {k: getattr(args, k) for k in ("models", "modes", "precisions", "size", "batch", "classes", "steps",
                                          "repeats", "warmup")}
    result = run_reference(spec)
    for row in result["rows"]:
        if "images_per_sec" in row:
            print(f"{row['model']:12s} {row['precision']:15s} {row['mode']:9s} {row['images_per_sec']:8.2f} images/s"
                  f"  (first step {row['first_step_seconds']:.1f} s)")
        else:
            print(f"{row['model']:12s} {row['precision']:15s} {row['mode']:9s} {row.get('skipped') or row['error']}")
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # segcli from this checkout
    os.environ.setdefault("KERAS_BACKEND", "torch")  # segcli.precision imports Keras: on torch, not TensorFlow
    raise SystemExit(main())
