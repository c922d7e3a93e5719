"""U-Net (Ronneberger et al.): a symmetric encoder/decoder with a concatenation skip at every level."""

from __future__ import annotations

import keras
from keras import layers

from segcli.errors import ModelError
from segcli.models.blocks import (check_encoder, check_filters, check_positive_int, check_upsample, conv_block, encoder_features,
                                  finish_model, image_input, logits_layer, score_conv, upsample_block,
                                  upsample_scores)
from segcli.models.encoders import backbone_features


def build_unet(num_classes: int, *, depth: int = 4, base_filters: int = 32, encoder: str = "vgg",
               encoder_weights=None, convs_per_block: int = 2, decoder_convs: int | None = None,
               decoder_filters=None,
               batch_norm: bool = True, bn_momentum: float = 0.99, dropout: float = 0.0, upsample: str = "transpose",
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
    encoder ``vgg16``, ``resnet50``, ``mobilenetv3small``, ... (segcli.models.encoders): a keras.applications
        backbone with its own preprocessing, tapped at strides 2, 4, 8, 16 (the skips) and 32 (the
        bottleneck); output stride 32, ``depth`` and ``normalize`` are ignored. Per decoder level
        (strides 16, 8, 4, 2) upsample, concatenate [backbone features, decoder], ``decoder_convs``
        (default ``convs_per_block``) 3x3 convs of ``base_filters * stride``; then one more level to
        stride 1 without a skip, and a 1x1 conv to the class scores. ``encoder_weights``: None/"none",
        "imagenet" or a weights file (see segcli.models.encoders).
    decoder_filters: the decoder levels' widths, deepest first (one per level; an int: every level), instead
        of their encoder level's: a narrow decoder moves the net's cost from the full-resolution levels to
        the encoder (docs/models.md, "Why the U-Net trailed").
    bn_momentum: BatchNormalization's moving-average momentum; 0.9 for runs of a few hundred steps.
    downsample_input: run the net on the image averaged down by this factor and upsample the class
        scores bilinearly at the end (factor**2 cheaper; the output stride grows by the factor).
    upsample: ``transpose`` (Conv2DTranspose, kernel ``up_kernel``, default 4, stride 2) or
        ``resize``/``resize_nearest``/``resize_bilinear`` (UpSampling2D then a 3x3 conv). A kernel the
        stride does not divide is refused unless ``allow_checkerboard``.
    """
    num_classes = check_positive_int("num_classes", num_classes)
    depth = check_positive_int("depth", depth)
    base_filters = check_positive_int("base_filters", base_filters)
    pretrained = check_encoder(encoder, encoder_weights)
    check_positive_int("convs_per_block", convs_per_block)
    check_upsample(upsample, up_kernel, 2, allow_checkerboard)
    if not 0.0 <= float(dropout) < 1.0:
        raise ModelError(f"dropout must be in [0, 1), got {dropout!r}")
    if decoder_convs is None:
        decoder_convs = 0 if encoder == "strided" else convs_per_block
    if isinstance(decoder_convs, bool) or not isinstance(decoder_convs, int) or decoder_convs < 0:
        raise ModelError(f"decoder_convs must be a non-negative integer, got {decoder_convs!r}")
    widths = [base_filters * 2 ** i for i in range(depth)]
    decoder_filters = None if decoder_filters is None else check_filters("decoder_filters", decoder_filters)
    up = dict(upsample=upsample, kernel_size=up_kernel, allow_checkerboard=allow_checkerboard)

    if pretrained:
        inputs, x = image_input(False, downsample_input)  # the backbone normalises as it was trained to
        feats = backbone_features(x, encoder, encoder_weights)
        skips, x = feats[:-1], feats[-1]
        widths = [base_filters * 2 ** i for i in range(1, len(feats))]  # strides 2, 4, 8, 16
        if dropout:
            x = layers.Dropout(dropout, name="bottleneck_dropout")(x)
        levels = range(len(skips) - 1, -1, -1)
    elif encoder == "vgg":
        inputs, x = image_input(normalize, downsample_input)
        skips = []
        for i, f in enumerate(widths, start=1):
            for k in range(1, convs_per_block + 1):
                x = conv_block(x, f, 3, batch_norm=batch_norm, name=f"enc{i}_{k}")
            skips.append(x)
            x = layers.MaxPooling2D(2, name=f"enc{i}_pool")(x)
        for k in range(1, convs_per_block + 1):
            x = conv_block(x, base_filters * 2 ** depth, 3, batch_norm=batch_norm, name=f"bottleneck_{k}")
        if dropout:
            x = layers.Dropout(dropout, name="bottleneck_dropout")(x)
        levels = range(depth - 1, -1, -1)
    else:
        inputs, x = image_input(normalize, downsample_input)
        skips = encoder_features(x, widths, encoder="strided", batch_norm=batch_norm)
        x = skips[-1]
        if dropout:
            x = layers.Dropout(dropout, name="bottleneck_dropout")(x)
        levels = range(depth - 2, -1, -1)

    levels = list(levels)
    if decoder_filters is None:
        decoder_widths = [widths[i] for i in levels]
    elif len(decoder_filters) == 1:
        decoder_widths = list(decoder_filters) * len(levels)
    elif len(decoder_filters) == len(levels):
        decoder_widths = list(decoder_filters)
    else:
        raise ModelError(f"decoder_filters must give one width or {len(levels)} (one per decoder level, deepest "
                         f"first), got {list(decoder_filters)!r}")
    for n, (i, width) in enumerate(zip(levels, decoder_widths), start=1):
        x = upsample_block(x, width, 2, batch_norm=batch_norm, name=f"dec{n}_up", **up)
        x = layers.Concatenate(name=f"dec{n}_concat")([skips[i], x])
        for k in range(1, decoder_convs + 1):
            x = conv_block(x, width, 3, batch_norm=batch_norm, name=f"dec{n}_{k}")

    if pretrained:  # back to stride 1, no skip there
        n, width = len(skips) + 1, base_filters if decoder_filters is None else decoder_widths[-1]
        x = upsample_block(x, width, 2, batch_norm=batch_norm, name=f"dec{n}_up", **up)
        for k in range(1, decoder_convs + 1):
            x = conv_block(x, width, 3, batch_norm=batch_norm, name=f"dec{n}_{k}")
        x = score_conv(x, num_classes, name="score")
    elif encoder == "vgg":
        x = score_conv(x, num_classes, name="score")
    else:
        x = upsample_scores(x, num_classes, 2, name="up_final", **up)
    return finish_model(inputs, logits_layer(x, downsample_input), name or f"unet_{encoder}", bn_momentum)
