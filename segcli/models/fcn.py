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
from segcli.models.blocks import (_check_choice, _check_encoder, _check_filters, _check_positive_int,
                                  _check_upsample, _conv, _encoder, _input, _logits, _model, _upsample)
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
    num_classes = _check_positive_int("num_classes", num_classes)
    filters = _check_filters("filters", filters)
    _check_choice("decoder", decoder, DECODERS)
    _check_choice("variant", variant, tuple(VARIANTS))
    pretrained = _check_encoder(encoder, encoder_weights)
    _check_positive_int("convs_per_block", convs_per_block)
    _check_upsample(upsample, up_kernel, 2, allow_checkerboard)
    if not 0.0 <= float(dropout) < 1.0:
        raise ModelError(f"dropout must be in [0, 1), got {dropout!r}")
    fused = VARIANTS[variant]
    if decoder == "skips" and len(filters) < fused and not pretrained:
        raise ModelError(f"{variant} fuses {fused} encoder depths but filters has only {len(filters)} levels")
    if decoder == "mirror" and pretrained and len(filters) != 5:
        raise ModelError(f"decoder 'mirror' on encoder {encoder!r} (stride 32) needs 5 filters, got {list(filters)}")

    if pretrained:
        inputs, x = _input(False, downsample_input)  # the backbone normalises as it was trained to
        feats = backbone_features(x, encoder, encoder_weights, fcn=True)
    else:
        inputs, x = _input(normalize, downsample_input)
        feats = _encoder(x, filters, encoder=encoder, batch_norm=batch_norm, convs_per_block=convs_per_block)
    x = feats[-1]
    if head_filters:
        x = _conv(x, _check_positive_int("head_filters", head_filters), 3, batch_norm=batch_norm, name="head1")
        if dropout:
            x = layers.Dropout(dropout, name="head1_dropout")(x)
        x = _conv(x, head_filters, 1, batch_norm=batch_norm, name="head2")
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    up = dict(upsample=upsample, allow_checkerboard=allow_checkerboard)

    if decoder == "mirror":
        for i, f in enumerate(reversed(filters[:-1]), start=1):
            x = _upsample(x, f, 2, kernel_size=up_kernel, batch_norm=batch_norm, name=f"dec{i}", **up)
        x = _upsample(x, num_classes, 2, kernel_size=up_kernel, activation=None, name="up_final", **up)
        return _model(inputs, _logits(x, downsample_input), name or f"fcn_mirror_{encoder}", bn_momentum)

    depth = len(feats)
    # the class-score head: a 1x1 conv where a classifier has a Dense layer
    score = layers.Conv2D(num_classes, 1, name=f"score_s{2 ** depth}")(x)
    for j in range(1, fused):
        level = depth - j  # feats[level - 1] is at stride 2**level
        score = _upsample(score, num_classes, 2, kernel_size=up_kernel, activation=None,
                          name=f"up_s{2 ** level}", **up)
        skip = layers.Conv2D(num_classes, 1, name=f"score_s{2 ** level}")(feats[level - 1])
        score = layers.Add(name=f"fuse_s{2 ** level}")([score, skip])
    stride = 2 ** (depth - fused + 1)
    x = _upsample(score, num_classes, stride, kernel_size=up_kernel if stride == 2 else None, activation=None,
                  name="up_final", **up)
    return _model(inputs, _logits(x, downsample_input), name or f"{variant}_{encoder}", bn_momentum)
