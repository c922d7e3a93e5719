"""U-Net (Ronneberger et al.): a symmetric encoder/decoder with a concatenation skip at every level."""

from __future__ import annotations

import keras
from keras import layers

from segcli.errors import ModelError
from segcli.models.blocks import (_check_choice, _check_positive_int, _check_upsample, _conv, _encoder, _input,
                                  _logits, _model, _upsample)


def build_unet(num_classes: int, *, depth: int = 4, base_filters: int = 32, encoder: str = "vgg",
               convs_per_block: int = 2, decoder_convs: int | None = None, batch_norm: bool = True,
               bn_momentum: float = 0.99, dropout: float = 0.0, upsample: str = "transpose",
               up_kernel: int | None = None, allow_checkerboard: bool = False, normalize: bool = True,
               downsample_input: int = 1, name: str | None = None) -> keras.Model:
    """Build a U-Net returning float32 logits of shape (H, W, num_classes) for (H, W, 3) RGB 0..255 input.

    Level i (0-based) has ``base_filters * 2**i`` filters; the output stride is ``2**depth``.
    encoder ``vgg``: per level ``convs_per_block`` 3x3 convs (the skip) then MaxPooling; a bottleneck of
        ``base_filters * 2**depth``; per decoder level upsample, concatenate [encoder, decoder],
        ``decoder_convs`` (default ``convs_per_block``) 3x3 convs; a 1x1 conv to the class scores.
    encoder ``strided``: per level one 4x4 stride-2 conv (the deepest is the bottleneck); per decoder
        level upsample, concatenate [encoder, decoder], ``decoder_convs`` (default 0) 3x3 convs; a final
        upsampling straight to num_classes (the tutorial's net with depth 4, base 32, no BN).
    bn_momentum: BatchNormalization's moving-average momentum; 0.9 for runs of a few hundred steps.
    downsample_input: run the net on the image averaged down by this factor and upsample the class
        scores bilinearly at the end (factor**2 cheaper; the output stride grows by the factor).
    upsample: ``transpose`` (Conv2DTranspose, kernel ``up_kernel``, default 4, stride 2) or
        ``resize``/``resize_nearest``/``resize_bilinear`` (UpSampling2D then a 3x3 conv). A kernel the
        stride does not divide is refused unless ``allow_checkerboard``.
    """
    num_classes = _check_positive_int("num_classes", num_classes)
    depth = _check_positive_int("depth", depth)
    base_filters = _check_positive_int("base_filters", base_filters)
    _check_choice("encoder", encoder, ("vgg", "strided"))
    _check_positive_int("convs_per_block", convs_per_block)
    _check_upsample(upsample, up_kernel, 2, allow_checkerboard)
    if not 0.0 <= float(dropout) < 1.0:
        raise ModelError(f"dropout must be in [0, 1), got {dropout!r}")
    if decoder_convs is None:
        decoder_convs = convs_per_block if encoder == "vgg" else 0
    if isinstance(decoder_convs, bool) or not isinstance(decoder_convs, int) or decoder_convs < 0:
        raise ModelError(f"decoder_convs must be a non-negative integer, got {decoder_convs!r}")
    widths = [base_filters * 2 ** i for i in range(depth)]
    up = dict(upsample=upsample, kernel_size=up_kernel, allow_checkerboard=allow_checkerboard)

    inputs, x = _input(normalize, downsample_input)
    if encoder == "vgg":
        skips = []
        for i, f in enumerate(widths, start=1):
            for k in range(1, convs_per_block + 1):
                x = _conv(x, f, 3, batch_norm=batch_norm, name=f"enc{i}_{k}")
            skips.append(x)
            x = layers.MaxPooling2D(2, name=f"enc{i}_pool")(x)
        for k in range(1, convs_per_block + 1):
            x = _conv(x, base_filters * 2 ** depth, 3, batch_norm=batch_norm, name=f"bottleneck_{k}")
        if dropout:
            x = layers.Dropout(dropout, name="bottleneck_dropout")(x)
        levels = range(depth - 1, -1, -1)
    else:
        skips = _encoder(x, widths, encoder="strided", batch_norm=batch_norm)
        x = skips[-1]
        if dropout:
            x = layers.Dropout(dropout, name="bottleneck_dropout")(x)
        levels = range(depth - 2, -1, -1)

    for n, i in enumerate(levels, start=1):
        x = _upsample(x, widths[i], 2, batch_norm=batch_norm, name=f"dec{n}_up", **up)
        x = layers.Concatenate(name=f"dec{n}_concat")([skips[i], x])
        for k in range(1, decoder_convs + 1):
            x = _conv(x, widths[i], 3, batch_norm=batch_norm, name=f"dec{n}_{k}")

    if encoder == "vgg":
        x = layers.Conv2D(num_classes, 1, name="score")(x)
    else:
        x = _upsample(x, num_classes, 2, activation=None, name="up_final", **up)
    return _model(inputs, _logits(x, downsample_input), name or f"unet_{encoder}", bn_momentum)
