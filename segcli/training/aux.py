"""An auxiliary class-score head for training only ([train] aux_weight, aux_stride): PP-LiteSeg, PIDNet and
BiSeNet add one on an intermediate feature map, so the gradient reaches the middle of the net directly.

`with_aux_head(model, ...)` returns the model to train: the same layers (weights shared with `model`) plus a
small head (3x3 conv + BN + ReLU, 1x1 conv to the classes, bilinear upsampling to the input size) on the last
feature map at `stride`, its scores concatenated after the model's own: (B, H, W, 2K). The loss
(SegmentationLoss with aux_weight) scores both halves; the metrics read the first K channels. What is saved
is `model`, with its one output: the head never leaves training.
"""

from __future__ import annotations

import keras
from keras import layers

from segcli.choices import AUX_STRIDES
from segcli.errors import SegcliError
from segcli.models.blocks import bilinear_upsample, conv_block, score_conv
from segcli.precision import HEAD_DTYPE, is_head_layer

AUX_WIDTH = 64  # the head's 3x3 conv (PP-LiteSeg's segmentation heads are 64 wide)


def feature_at_stride(model: keras.Model, stride: int) -> str:
    """The name of the last layer (in the graph's order) whose output is a feature map at `stride` of the input:
    found on a copy of the model built for one input size (the model's own input has no height or width)."""
    probe = 4 * 32 * stride  # several pixels at the stride, and a multiple of any output stride up to 32 x this
    fixed = keras.models.clone_model(model, input_tensors=keras.Input((probe, probe, 3)))
    found = None
    for layer in fixed.layers:
        output = layer.output
        if (not isinstance(output, keras.KerasTensor) or len(output.shape) != 4 or is_head_layer(layer.name)
                or isinstance(layer, keras.layers.InputLayer)):
            continue
        if output.shape[1] == probe // stride and output.shape[2] == probe // stride:
            found = layer.name
    if found is None:
        raise SegcliError(f"aux_stride = {stride}: model {model.name!r} has no feature map at stride {stride} outside "
                          f"a pretrained encoder (the head cannot tap inside one); try another of "
                          f"{', '.join(map(str, AUX_STRIDES))}, or no auxiliary head (aux_weight = 0)")
    return found


def with_aux_head(model: keras.Model, num_classes: int, stride: int = 16) -> keras.Model:
    """The training model: `model`'s output and an auxiliary head's scores on its feature map at `stride`,
    concatenated on the channels (float32, as the class-score head computes: segcli.precision)."""
    features = model.get_layer(feature_at_stride(model, stride)).output
    x = conv_block(features, AUX_WIDTH, 3, batch_norm=True, name="aux_head")
    x = score_conv(x, num_classes, name="aux_score")
    x = bilinear_upsample(x, stride, name="aux_upsample", dtype=HEAD_DTYPE)
    both = layers.Concatenate(name="with_aux", dtype=HEAD_DTYPE)([model.outputs[0], x])
    return keras.Model(model.inputs, both, name=f"{model.name}_with_aux")


__all__ = ["AUX_STRIDES", "feature_at_stride", "with_aux_head"]
