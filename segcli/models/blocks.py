"""Shared private building pieces for the builders (stock Keras layers only).

Every piece is a plain function that adds stock layers to a functional graph, so a saved
``.keras`` file loads with ``keras.saving.load_model`` in a process that never imported segcli.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from segcli import choices
from segcli.errors import ModelError
from segcli.models.encoders import BACKBONES
from segcli.precision import HEAD_DTYPE, all_layers, is_head_layer

UPSAMPLE_MODES = ("transpose", "resize", "resize_nearest", "resize_bilinear")
ENCODERS = ("vgg", "strided")


def check_choice(what: str, value, valid) -> None:
    """segcli.choices.check_choice's rule and message, as a ModelError naming the option."""
    try:
        choices.check_choice(value, tuple(valid))
    except ValueError as exc:
        raise ModelError(f"{what}: {exc}") from None


def check_positive_int(what: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"{what} must be a positive integer, got {value!r}")
    return value


def check_filters(what: str, value, *, min_len: int = 1) -> tuple:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    try:
        value = tuple(value)
    except TypeError:
        raise ModelError(f"{what} must be a list of positive integers, got {value!r}") from None
    if len(value) < min_len or not all(isinstance(f, int) and not isinstance(f, bool) and f > 0 for f in value):
        raise ModelError(f"{what} must be a list of at least {min_len} positive integers, got {list(value)!r}")
    return value


def finish_model(inputs, outputs, name: str, bn_momentum: float) -> keras.Model:
    """The model, its BatchNormalization layers set to ``bn_momentum`` (saved in their config).

    Keras' 0.99 suits thousands of steps; a run of a few hundred (a small dataset, a few epochs) ends
    with moving statistics that have not caught up with the weights, and val scores far below train.
    """
    if isinstance(bn_momentum, bool) or not isinstance(bn_momentum, (int, float)) or not 0.0 < bn_momentum < 1.0:
        raise ModelError(f"bn_momentum must be in (0, 1), got {bn_momentum!r}")
    model = keras.Model(inputs, outputs, name=name)
    for layer in all_layers(model):
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = float(bn_momentum)
    return model


def check_encoder(encoder, encoder_weights) -> bool:
    """Validate ``encoder`` (segcli's own or a keras.applications backbone); True for a backbone."""
    check_choice("encoder", encoder, ENCODERS + tuple(BACKBONES))
    if encoder in BACKBONES:
        return True
    if encoder_weights is not None and not (isinstance(encoder_weights, str) and encoder_weights.lower() == "none"):
        raise ModelError(f"encoder_weights needs a pretrained encoder ({', '.join(BACKBONES)}), "
                         f"not encoder {encoder!r}")
    return False


def image_input(normalize: bool = True, downsample: int = 1):
    """``(None, None, 3)`` float RGB 0..255 input; optionally rescaled to -1..1 inside the model.

    downsample > 1 averages the image down by that factor first: the whole net then runs on
    downsample**2 fewer pixels (see logits_layer, which brings the scores back to full size).
    """
    inputs = keras.Input((None, None, 3), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="normalize")(inputs) if normalize else inputs
    if check_positive_int("downsample_input", downsample) > 1:
        x = layers.AveragePooling2D(downsample, name="downsample_input")(x)
    return inputs, x


# --- the class-score head: float32 under every policy (segcli.precision.is_head_layer says why) ---------

def _head(name: str) -> str:
    """HEAD_DTYPE for a head layer; a head layer must be named so that with_policy finds it in a model file."""
    if not is_head_layer(name):
        raise ModelError(f"{name!r} is not a class-score head layer's name (segcli.precision.HEAD_LAYER)")
    return HEAD_DTYPE


def score_conv(x, num_classes: int, *, name: str):
    """A 1x1 conv to class scores (where a classifier has a Dense layer)."""
    return layers.Conv2D(num_classes, 1, name=name, dtype=_head(name))(x)


def fuse_scores(scores, skip, *, name: str):
    """The sum of two class-score maps (FCN's skips)."""
    return layers.Add(name=name, dtype=_head(name))([scores, skip])


def upsample_scores(x, num_classes: int, stride: int, *, name: str, **up):
    """Upsample to class scores by ``stride`` (no BN, no activation; see upsample_block for ``up``)."""
    return upsample_block(x, num_classes, stride, activation=None, dtype=_head(f"{name}_conv"), name=name, **up)


def logits_layer(x, upsample: int = 1):
    """The last layer: identity in float32, so logits leave in float32 under a mixed policy."""
    if upsample > 1:
        x = bilinear_upsample(x, upsample, name="upsample_logits", dtype=_head("upsample_logits"))
    return layers.Activation("linear", dtype=_head("logits"), name="logits")(x)


def conv_block(x, filters: int, kernel_size: int = 3, *, strides: int = 1, batch_norm: bool = True,
               activation: str | None = "relu", dtype: str | None = None, name: str):
    """Conv2D (+ BatchNorm) + activation; the conv has a bias only without BN. dtype: None, the global policy."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=not batch_norm,
                      name=f"{name}_conv", dtype=dtype)(x)
    return _bn_act(x, batch_norm, activation, name)


def _bn_act(x, batch_norm: bool, activation: str | None, name: str):
    """What follows a conv: BatchNorm (``{name}_bn``) if asked, then the activation (``{name}_{activation}``)."""
    if batch_norm:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
    if activation:
        x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def check_upsample(upsample: str, kernel_size: int | None, stride: int, allow_checkerboard: bool) -> int:
    """Validate an upsampling choice; return the transposed-conv kernel size (default 2*stride)."""
    check_choice("upsample", upsample, UPSAMPLE_MODES)
    kernel = 2 * stride if kernel_size is None else check_positive_int("up_kernel", kernel_size)
    if upsample == "transpose" and kernel % stride and not allow_checkerboard:
        raise ModelError(
            f"transposed-conv kernel {kernel} is not a multiple of its stride {stride}: the overlap is uneven and "
            f"makes checkerboard artefacts; use a kernel of {stride * max(1, round(kernel / stride))}, "
            f"upsample='resize', or allow_checkerboard=True")
    return kernel


def upsample_block(x, filters: int, stride: int = 2, *, upsample: str = "transpose", kernel_size: int | None = None,
                   batch_norm: bool = False, activation: str | None = "relu", allow_checkerboard: bool = False,
                   dtype: str | None = None, name: str):
    """Upsample by ``stride``: a learned Conv2DTranspose, or UpSampling2D (nearest/bilinear) then a 3x3 conv.

    The transposed conv's kernel defaults to ``2 * stride``; a kernel the stride does not divide is refused
    (checkerboard artefacts) unless ``allow_checkerboard``.
    """
    kernel = check_upsample(upsample, kernel_size, stride, allow_checkerboard)
    if upsample == "transpose":
        x = layers.Conv2DTranspose(filters, kernel, strides=stride, padding="same", use_bias=not batch_norm,
                                   name=f"{name}_convT", dtype=dtype)(x)
        return _bn_act(x, batch_norm, activation, name)
    if upsample == "resize_bilinear":
        x = bilinear_upsample(x, stride, name=f"{name}_resize", dtype=dtype)
    else:
        x = layers.UpSampling2D(stride, interpolation="nearest", name=f"{name}_resize", dtype=dtype)(x)
    return conv_block(x, filters, 3, batch_norm=batch_norm, activation=activation, dtype=dtype, name=name)


def bilinear_kernel(factor: int, channels: int) -> np.ndarray:
    """(2f, 2f, channels, channels) weights that make a stride-f transposed conv a bilinear resize."""
    size = 2 * factor
    center = factor - 0.5
    og = np.arange(size, dtype=np.float64)
    k1 = 1 - np.abs(og - center) / factor
    kernel = np.zeros((size, size, channels, channels), dtype=np.float32)
    for c in range(channels):
        kernel[:, :, c, c] = np.outer(k1, k1)
    return kernel


def bilinear_upsample(x, factor: int, *, name: str, dtype: str | None = None):
    """Bilinear upsampling as a frozen Conv2DTranspose.

    UpSampling2D(interpolation="bilinear") cannot trace with unknown height and width (Keras 3 resize
    needs them in Python), and our inputs are (None, None, 3): a fixed kernel does the same arithmetic.
    """
    channels = int(x.shape[-1])
    return layers.Conv2DTranspose(channels, 2 * factor, strides=factor, padding="same", use_bias=False,
                                  trainable=False, name=name, dtype=dtype,
                                  kernel_initializer=keras.initializers.Constant(bilinear_kernel(factor, channels)))(x)


def encoder_features(x, filters, *, encoder: str, batch_norm: bool, convs_per_block: int = 2, kernel_size: int = 3,
             strided_kernel: int = 4, name: str = "enc"):
    """A downsampling encoder; returns the feature map after each stride-2 step (strides 2, 4, 8, ...).

    ``vgg``: per level ``convs_per_block`` 3x3 convs then 2x2 MaxPooling.
    ``strided``: per level one ``strided_kernel`` x ``strided_kernel`` stride-2 conv (the tutorial's encoder).
    """
    check_choice("encoder", encoder, ENCODERS)
    feats = []
    for level, f in enumerate(filters, start=1):
        if encoder == "vgg":
            for i in range(1, convs_per_block + 1):
                x = conv_block(x, f, kernel_size, batch_norm=batch_norm, name=f"{name}{level}_{i}")
            x = layers.MaxPooling2D(2, name=f"{name}{level}_pool")(x)
        else:
            x = conv_block(x, f, strided_kernel, strides=2, batch_norm=batch_norm, name=f"{name}{level}")
        feats.append(x)
    return feats


def checkerboard_demo(upsample: str = "transpose", kernel_size: int = 3, stride: int = 2) -> keras.Model:
    """A one-channel upsampler with all-ones weights and no bias, to show checkerboard artefacts.

    On a constant input a transposed conv whose kernel the stride does not divide gives a periodic
    (uneven) interior; kernel = k * stride, or resize-then-3x3-conv, gives a flat interior.
    """
    inputs = keras.Input((None, None, 1))
    if upsample == "transpose":
        layer = layers.Conv2DTranspose(1, kernel_size, strides=stride, padding="same", use_bias=False,
                                       kernel_initializer="ones")
        x = layer(inputs)
    else:
        interpolation = "bilinear" if upsample == "resize_bilinear" else "nearest"
        x = layers.UpSampling2D(stride, interpolation=interpolation)(inputs)
        x = layers.Conv2D(1, kernel_size, padding="same", use_bias=False, kernel_initializer="ones")(x)
    return keras.Model(inputs, x, name=f"checkerboard_{upsample}_{kernel_size}_{stride}")
