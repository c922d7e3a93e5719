"""Facts about a built model: parameters, GFLOPs and activations per image, output stride.

GFLOPs are computed analytically from the layer configs (2 * multiply-accumulates of Conv2D,
DepthwiseConv2D, SeparableConv2D, Conv2DTranspose and Dense layers) by walking the functional graph,
nested models (a pretrained encoder) included, with a concrete image size; nothing is run.
"""

from __future__ import annotations

import math

import keras
from keras import layers

from segcli.errors import ModelError

_POOLING = (layers.MaxPooling2D, layers.AveragePooling2D)
_GLOBAL_POOLING = (layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D)
_CONVS = (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D)  # Keras 3: not subclasses of one another


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


def _nested(layer):
    """A functional (or built Sequential) model used as a layer, else None."""
    if isinstance(layer, keras.Model):
        inner = getattr(layer, "_functional", None) or layer
        if getattr(inner, "_nodes_by_depth", None) is not None:
            return inner
    return None


def _conv_out(layer, h: int, w: int) -> tuple[int, int]:
    (sh, sw), (kh, kw) = _pair(layer.strides), _pair(layer.kernel_size)
    dh, dw = _pair(layer.dilation_rate)
    return (_out_size(h, (kh - 1) * dh + 1, sh, layer.padding), _out_size(w, (kw - 1) * dw + 1, sw, layer.padding))


def _walk(model: keras.Model, height: int, width: int, sizes: dict | None = None):
    """Yield (node, input (h, w) list, output (h, w)) in topological order for a height x width image,
    through nested models (a backbone used as one layer): their inner nodes are yielded instead."""
    sizes = {id(t): (height, width) for t in model.inputs} if sizes is None else sizes
    for node in _nodes_in_order(model):
        layer = node.operation
        ins = [sizes.get(id(t), (height, width)) for t in node.input_tensors]
        h, w = ins[0] if ins else (height, width)
        inner = _nested(layer)
        if inner is not None:
            inner_sizes = {id(t): size for t, size in zip(inner.inputs, ins)}
            yield from _walk(inner, h, w, inner_sizes)
            for outer, t in zip(node.output_tensors, inner.outputs):
                sizes[id(outer)] = inner_sizes.get(id(t), (h, w))
            continue
        if isinstance(layer, layers.Conv2DTranspose):
            (sh, sw), (kh, kw) = _pair(layer.strides), _pair(layer.kernel_size)
            if layer.padding == "same":
                out = (h * sh, w * sw)
            else:
                out = ((h - 1) * sh + kh, (w - 1) * sw + kw)
        elif isinstance(layer, _CONVS):
            out = _conv_out(layer, h, w)
        elif isinstance(layer, _POOLING):
            (ph, pw) = _pair(layer.pool_size)
            (sh, sw) = _pair(layer.strides or layer.pool_size)
            out = (_out_size(h, ph, sh, layer.padding), _out_size(w, pw, sw, layer.padding))
        elif isinstance(layer, layers.UpSampling2D):
            uh, uw = _pair(layer.size)
            out = (h * uh, w * uw)
        elif isinstance(layer, layers.ZeroPadding2D):
            (top, bottom), (left, right) = layer.padding
            out = (h + top + bottom, w + left + right)
        elif isinstance(layer, layers.Cropping2D):
            (top, bottom), (left, right) = layer.cropping
            out = (h - top - bottom, w - left - right)
        elif isinstance(layer, _GLOBAL_POOLING):
            out = (1, 1)  # squeeze-and-excite: the convs after it run on one pixel
        elif isinstance(layer, layers.Reshape) and len(layer.target_shape) == 3 and None not in layer.target_shape[:2] \
                and -1 not in layer.target_shape[:2]:
            out = (int(layer.target_shape[0]), int(layer.target_shape[1]))
        else:
            out = (h, w)
        for t in node.output_tensors:
            sizes[id(t)] = out
        yield node, ins, out


def gflops(model: keras.Model, height: int, width: int) -> float:
    """Floating-point operations (2 * multiply-accumulates) per image of height x width, in GFLOPs.

    Counts Conv2D (incl. groups), DepthwiseConv2D, SeparableConv2D, Conv2DTranspose and Dense layers, also
    inside nested models (a pretrained encoder); other layers are ignored.
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
        elif isinstance(layer, layers.DepthwiseConv2D):
            kh, kw, cin, multiplier = layer.kernel.shape
            macs += oh * ow * kh * kw * cin * multiplier
        elif isinstance(layer, layers.SeparableConv2D):
            kh, kw, cin, multiplier = layer.depthwise_kernel.shape
            macs += oh * ow * (kh * kw * cin * multiplier + cin * multiplier * layer.filters)
        elif isinstance(layer, layers.Dense):
            cin, units = layer.kernel.shape
            rank = len(node.input_tensors[0].shape)
            positions = oh * ow if rank == 4 else 1
            macs += positions * cin * units
    return 2.0 * macs / 1e9


def activation_count(model: keras.Model, height: int, width: int) -> int:
    """Numbers every layer outputs for one image of height x width, summed (layers inside nested models
    included): what training keeps for the backward pass, from the graph's shapes alone (nothing is run;
    the model may be built without its weights, in a keras.StatelessScope)."""
    total = 0
    for node, _ins, (oh, ow) in _walk(model, int(height), int(width)):
        for t in node.output_tensors:
            dims = t.shape[1:]
            total += oh * ow * (dims[-1] or 1) if len(dims) == 3 else math.prod(d or 1 for d in dims)
    return total


def output_stride(model: keras.Model) -> int:
    """How many input pixels one pixel of the deepest feature map spans: the product of the strides of
    the downsampling layers (convolutions with stride > 1, pooling) along the deepest path, also inside
    nested models (a pretrained encoder).

    Inputs whose height and width are multiples of it come back at the same size.
    """
    factor: dict[int, tuple[int, int]] = {id(t): (1, 1) for t in model.inputs}
    return math.lcm(*_strides(model, factor))


def _strides(model: keras.Model, factor: dict) -> tuple[int, int]:
    """Propagate (stride h, stride w) from ``factor`` (by tensor id) through ``model``; the largest seen."""
    best = (1, 1)
    for node in _nodes_in_order(model):
        layer = node.operation
        ins = [factor.get(id(t), (1, 1)) for t in node.input_tensors] or [(1, 1)]
        fh, fw = max(f[0] for f in ins), max(f[1] for f in ins)
        inner = _nested(layer)
        if inner is not None:
            inner_factor = {id(t): f for t, f in zip(inner.inputs, ins)}
            deepest = _strides(inner, inner_factor)
            best = (max(best[0], deepest[0]), max(best[1], deepest[1]))
            for outer, t in zip(node.output_tensors, inner.outputs):
                factor[id(outer)] = inner_factor.get(id(t), (fh, fw))
            continue
        if isinstance(layer, _CONVS):
            sh, sw = _pair(layer.strides)
            fh, fw = fh * sh, fw * sw
        elif isinstance(layer, _POOLING):
            sh, sw = _pair(layer.strides or layer.pool_size)
            fh, fw = fh * sh, fw * sw
        for t in node.output_tensors:
            factor[id(t)] = (fh, fw)
        best = (max(best[0], fh), max(best[1], fw))
    return best
