"""Fully convolutional network (Long, Shelhamer & Darrell): a classifier whose Dense head is a 1x1 conv.

The class-score maps are upsampled with learned transposed convolutions (or resize + conv). The skip
variants fuse score maps of several encoder depths: ``fcn32s`` one (the deepest), ``fcn16s`` two,
``fcn8s`` three, then one final upsampling to the input size. ``decoder="mirror"`` instead mirrors the
encoder with transposed convs and no skips (the tutorial's net).
"""

from __future__ import annotations

import keras
from keras import layers

from segcli.errors import ModelError
from segcli.models.blocks import (check_choice, check_encoder, check_filters, check_positive_int, check_upsample,
                                  conv_block, encoder_features, finish_model, fuse_scores, image_input, logits_layer,
                                  score_conv, upsample_block, upsample_scores)
from segcli.models.encoders import backbone_features

VARIANTS = {"fcn32s": 1, "fcn16s": 2, "fcn8s": 3}  # variant -> number of fused encoder depths
DECODERS = ("skips", "mirror")


def build_fcn(num_classes: int, *, variant: str = "fcn8s", encoder: str = "vgg", encoder_weights=None,
              filters=(32, 64, 128, 256, 256), convs_per_block: int = 2, batch_norm: bool = True,
              bn_momentum: float = 0.99, decoder: str = "skips", head_filters: int = 0, dropout: float = 0.0,
              upsample: str = "transpose", up_kernel: int | None = None, allow_checkerboard: bool = False,
              normalize: bool = True, downsample_input: int = 1, name: str | None = None) -> keras.Model:
    """Build an FCN returning float32 logits of shape (H, W, num_classes) for (H, W, 3) RGB 0..255 input.

    variant: ``fcn32s`` / ``fcn16s`` / ``fcn8s`` (skip decoder only; ignored with ``decoder="mirror"``).
    encoder: ``vgg`` (``convs_per_block`` 3x3 convs then MaxPooling per level) or ``strided`` (one 4x4
        stride-2 conv per level). ``filters`` gives one width per level; the output stride is 2**len(filters).
    encoder ``vgg16``, ``resnet50``, ``mobilenetv3small``, ... (segcli.models.encoders): a keras.applications
        backbone with its own preprocessing; its features at strides 8, 16 and 32 are fused (fcn8s; VGG16
        at pool3, pool4 and pool5 as in the FCN paper); output stride 32. ``filters`` only sets the mirror
        decoder's widths (5 of them), ``convs_per_block`` and ``normalize`` are ignored.
        ``encoder_weights``: None/"none", "imagenet" or a weights file (see segcli.models.encoders).
    decoder: ``skips`` (score maps fused, FCN-style) or ``mirror`` (transposed convs back through
        ``reversed(filters[:-1])``, then one to num_classes; no skips).
    bn_momentum: BatchNormalization's moving-average momentum; 0.9 for runs of a few hundred steps.
    head_filters: if > 0, two convs (3x3 then 1x1) of that width after the encoder, as fc6/fc7 were.
    downsample_input: run the net on the image averaged down by this factor and upsample the class
        scores bilinearly at the end (factor**2 cheaper; the output stride grows by the factor).
    upsample: ``transpose`` (Conv2DTranspose, kernel ``up_kernel`` for the 2x steps, default 4, and
        2*stride for the final FCN upsampling), ``resize``/``resize_nearest``/``resize_bilinear``
        (UpSampling2D then a 3x3 conv). A kernel the stride does not divide is refused unless
        ``allow_checkerboard``.
    """
    num_classes = check_positive_int("num_classes", num_classes)
    filters = check_filters("filters", filters)
    check_choice("decoder", decoder, DECODERS)
    check_choice("variant", variant, tuple(VARIANTS))
    pretrained = check_encoder(encoder, encoder_weights)
    check_positive_int("convs_per_block", convs_per_block)
    check_upsample(upsample, up_kernel, 2, allow_checkerboard)
    if not 0.0 <= float(dropout) < 1.0:
        raise ModelError(f"dropout must be in [0, 1), got {dropout!r}")
    fused = VARIANTS[variant]
    if decoder == "skips" and len(filters) < fused and not pretrained:
        raise ModelError(f"{variant} fuses {fused} encoder depths but filters has only {len(filters)} levels")
    if decoder == "mirror" and pretrained and len(filters) != 5:
        raise ModelError(f"decoder 'mirror' on encoder {encoder!r} (stride 32) needs 5 filters, got {list(filters)}")

    if pretrained:
        inputs, x = image_input(False, downsample_input)  # the backbone normalises as it was trained to
        feats = backbone_features(x, encoder, encoder_weights, fcn=True)
    else:
        inputs, x = image_input(normalize, downsample_input)
        feats = encoder_features(x, filters, encoder=encoder, batch_norm=batch_norm, convs_per_block=convs_per_block)
    x = feats[-1]
    if head_filters:
        x = conv_block(x, check_positive_int("head_filters", head_filters), 3, batch_norm=batch_norm, name="head1")
        if dropout:
            x = layers.Dropout(dropout, name="head1_dropout")(x)
        x = conv_block(x, head_filters, 1, batch_norm=batch_norm, name="head2")
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    up = dict(upsample=upsample, allow_checkerboard=allow_checkerboard)

    if decoder == "mirror":
        for i, f in enumerate(reversed(filters[:-1]), start=1):
            x = upsample_block(x, f, 2, kernel_size=up_kernel, batch_norm=batch_norm, name=f"dec{i}", **up)
        x = upsample_scores(x, num_classes, 2, kernel_size=up_kernel, name="up_final", **up)
        return finish_model(inputs, logits_layer(x, downsample_input), name or f"fcn_mirror_{encoder}", bn_momentum)

    depth = len(feats)
    # the class-score head: a 1x1 conv where a classifier has a Dense layer
    score = score_conv(x, num_classes, name=f"score_s{2 ** depth}")
    for j in range(1, fused):
        level = depth - j  # feats[level - 1] is at stride 2**level
        score = upsample_scores(score, num_classes, 2, kernel_size=up_kernel, name=f"up_s{2 ** level}", **up)
        skip = score_conv(feats[level - 1], num_classes, name=f"score_s{2 ** level}")
        score = fuse_scores(score, skip, name=f"fuse_s{2 ** level}")
    stride = 2 ** (depth - fused + 1)
    x = upsample_scores(score, num_classes, stride, kernel_size=up_kernel if stride == 2 else None, name="up_final",
                        **up)
    return finish_model(inputs, logits_layer(x, downsample_input), name or f"{variant}_{encoder}", bn_momentum)
