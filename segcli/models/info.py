"""Facts about a built model: parameters, GFLOPs per image, output stride.

GFLOPs are computed analytically from the layer configs (2 * multiply-accumulates of Conv2D,
Conv2DTranspose and Dense layers) by walking the functional graph with a concrete image size;
nothing is run.
"""

from __future__ import annotations

import math

import keras
from keras import layers

from segcli.errors import ModelError

_POOLING = (layers.MaxPooling2D, layers.AveragePooling2D)


def count_params(model: keras.Model) -> int:
    """All weights, trainable or not (BatchNorm moving statistics included), as Keras counts them."""
    return int(model.count_params())


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])


def _nodes_in_order(model: keras.Model):
    model = getattr(model, "_functional", None) or model  # a built Sequential wraps a functional model
    by_depth = getattr(model, "_nodes_by_depth", None)
    if by_depth is None:
        raise ModelError(f"model {model.name!r} is not a functional Keras model")
    for depth in sorted(by_depth, reverse=True):  # inputs first
        yield from by_depth[depth]


def _out_size(size: int, kernel: int, stride: int, padding: str) -> int:
    if padding == "same":
        return -(-size // stride)
    return (size - kernel) // stride + 1


def _walk(model: keras.Model, height: int, width: int):
    """Yield (node, input (h, w) list, output (h, w)) in topological order for a height x width image."""
    sizes: dict[int, tuple[int, int]] = {id(t): (height, width) for t in model.inputs}
    for node in _nodes_in_order(model):
        layer = node.operation
        ins = [sizes.get(id(t), (height, width)) for t in node.input_tensors]
        h, w = ins[0] if ins else (height, width)
        if isinstance(layer, layers.Conv2DTranspose):
            (sh, sw), (kh, kw) = _pair(layer.strides), _pair(layer.kernel_size)
            if layer.padding == "same":
                out = (h * sh, w * sw)
            else:
                out = ((h - 1) * sh + kh, (w - 1) * sw + kw)
        elif isinstance(layer, layers.Conv2D):
            (sh, sw), (kh, kw) = _pair(layer.strides), _pair(layer.kernel_size)
            dh, dw = _pair(layer.dilation_rate)
            out = (_out_size(h, (kh - 1) * dh + 1, sh, layer.padding), _out_size(w, (kw - 1) * dw + 1, sw, layer.padding))
        elif isinstance(layer, _POOLING):
            (ph, pw) = _pair(layer.pool_size)
            (sh, sw) = _pair(layer.strides or layer.pool_size)
            out = (_out_size(h, ph, sh, layer.padding), _out_size(w, pw, sw, layer.padding))
        elif isinstance(layer, layers.UpSampling2D):
            uh, uw = _pair(layer.size)
            out = (h * uh, w * uw)
        else:
            out = (h, w)
        for t in node.output_tensors:
            sizes[id(t)] = out
        yield node, ins, out


def gflops(model: keras.Model, height: int, width: int) -> float:
    """Floating-point operations (2 * multiply-accumulates) per image of height x width, in GFLOPs.

    Counts Conv2D (incl. depthwise groups), Conv2DTranspose and Dense layers; other layers are ignored.
    """
    macs = 0
    for node, ins, (oh, ow) in _walk(model, int(height), int(width)):
        layer = node.operation
        if isinstance(layer, layers.Conv2DTranspose):
            kh, kw, _cout, cin = layer.kernel.shape  # (kh, kw, out, in)
            h, w = ins[0]
            macs += h * w * kh * kw * cin * layer.filters
        elif isinstance(layer, layers.Conv2D):
            kh, kw, cin_per_group, cout = layer.kernel.shape
            macs += oh * ow * kh * kw * cin_per_group * cout
        elif isinstance(layer, layers.Dense):
            cin, units = layer.kernel.shape
            rank = len(node.input_tensors[0].shape)
            positions = oh * ow if rank == 4 else 1
            macs += positions * cin * units
    return 2.0 * macs / 1e9


def output_stride(model: keras.Model) -> int:
    """How many input pixels one pixel of the deepest feature map spans: the product of the strides of
    the downsampling layers (Conv2D with stride > 1, pooling) along the deepest path.

    Inputs whose height and width are multiples of it come back at the same size.
    """
    factor: dict[int, tuple[int, int]] = {id(t): (1, 1) for t in model.inputs}
    best = (1, 1)
    for node in _nodes_in_order(model):
        layer = node.operation
        ins = [factor.get(id(t), (1, 1)) for t in node.input_tensors] or [(1, 1)]
        fh, fw = max(f[0] for f in ins), max(f[1] for f in ins)
        if isinstance(layer, layers.Conv2D) and not isinstance(layer, layers.Conv2DTranspose):
            sh, sw = _pair(layer.strides)
            fh, fw = fh * sh, fw * sw
        elif isinstance(layer, _POOLING):
            sh, sw = _pair(layer.strides or layer.pool_size)
            fh, fw = fh * sh, fw * sw
        for t in node.output_tensors:
            factor[id(t)] = (fh, fw)
        best = (max(best[0], fh), max(best[1], fw))
    return math.lcm(*best)
