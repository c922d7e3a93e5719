"""The model layer: builder functions, the name registry and model facts. Knows no data and no CLI.

>>> from segcli.models import build_model, list_models
>>> model = build_model("lambda-unet", num_classes=12)
>>> model = build_model("unet", 12, encoder="mobilenetv3small", encoder_weights="imagenet")  # see encoders.py
"""

from __future__ import annotations

from segcli.models.encoders import (ENCODER_LAYER, build_backbone, decoder_variables, encoder_info, encoder_layers,
                                    encoder_of, encoder_variables, list_encoders, set_encoder_trainable)
from segcli.models.fcn import build_fcn
from segcli.models.info import count_params, gflops, output_stride
from segcli.models.registry import (ModelEntry, build_model, builder_defaults, builder_options, list_models,
                                    model_entry, model_spec_from_toml, register)
from segcli.models.unet import build_unet

# --- the registered architectures -------------------------------------------------------------
register("fcn", build_fcn, description="FCN-8s, VGG-style encoder with BN (the default FCN)", variant="fcn8s")
register("fcn32s", build_fcn, description="FCN-32s: deepest score map, one 32x transposed conv", variant="fcn32s")
register("fcn16s", build_fcn, description="FCN-16s: scores of the two deepest maps fused, one 16x up",
         variant="fcn16s")
register("fcn8s", build_fcn, description="FCN-8s: scores at strides 8/16/32 fused, one 8x up", variant="fcn8s")
register("unet", build_unet, description="U-Net, VGG-style blocks with BN, depth 4, base width 32")
register("lambda-fcn", build_fcn, description="the tutorial's FCN: 4 strided convs, mirrored transposed convs",
         encoder="strided", filters=(32, 64, 128, 256), batch_norm=False, decoder="mirror")
register("lambda-unet", build_unet, description="the tutorial's U-Net: lambda-fcn + concat skips",
         encoder="strided", depth=4, base_filters=32, batch_norm=False)

__all__ = [
    "ENCODER_LAYER", "ModelEntry", "build_backbone", "build_fcn", "build_model", "build_unet", "builder_defaults",
    "builder_options", "count_params", "decoder_variables", "encoder_info", "encoder_layers", "encoder_of",
    "encoder_variables", "gflops", "list_encoders", "list_models", "model_entry", "model_spec_from_toml",
    "output_stride", "register", "set_encoder_trainable",
]
