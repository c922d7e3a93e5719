"""Pretrained encoders: Keras' own ``keras.applications`` backbones as the encoder of FCN and U-Net.

``build_unet(12, encoder="resnet50", encoder_weights="imagenet")`` / ``build_fcn(..., encoder="vgg16")``.
Each backbone is built without its classifier (``include_top=False``) for ``(None, None, 3)`` input, and
tapped at strides 2, 4, 8, 16 and 32 (``BACKBONES[name].features``; stride 32 is the backbone's own
output). Its input preprocessing is part of the model, so the net still takes float RGB 0..255:
MobileNetV3 and EfficientNet(V2) carry their own Rescaling/Normalization layers; VGG16 and ResNet50
expect Caffe-style input (BGR, ImageNet mean subtracted), done by one frozen 1x1 Conv2D named
``encoder_preprocess`` (a channel permutation and a bias: a stock layer, so a saved ``.keras`` file loads
with plain ``keras.saving.load_model``; a Lambda layer would not without ``safe_mode=False``).

encoder_weights: ``None``/``"none"`` (random initialisation), ``"imagenet"`` (Keras downloads the
backbone's ``_notop`` ``.h5`` into its cache, ``~/.keras/models``, once), or the path of a weights file:
that ``_notop`` ``.h5`` as Keras ships it, or a ``.weights.h5`` saved from the backbone
(``build_backbone(name).save_weights(...)``). Failures are one-line ModelErrors naming the file.

Contract for training code (freezing, a smaller learning rate for the encoder):

- A net built with a backbone holds the backbone as ONE nested functional model, the layer named
  ``ENCODER_LAYER`` (``"encoder"``); ``encoder_of(model)`` returns it (None for segcli's own encoders),
  also for a model loaded back from a ``.keras`` file. Everything in it, and nothing else, is the
  pretrained part. (``encoder_preprocess``, outside it, is frozen for good: never make it trainable.)
- Freeze / unfreeze with ``set_encoder_trainable(model, False / True)`` (or ``encoder_of(model).trainable
  = ...``; never set ``trainable`` on every layer of the model: the bilinear upsamplers and
  ``encoder_preprocess`` are frozen by design). In Keras 3 a BatchNormalization layer that is not
  trainable runs in inference mode (moving statistics used, not updated) even under ``fit``, so a frozen
  encoder keeps its BatchNormalization in inference mode with no more code. Compile (again) after
  changing it: Keras fixes the trainable variables when it builds the train function.
- ``encoder_variables(model)``: the encoder's trainable variables (empty while frozen) and
  ``decoder_variables(model)`` the others. The recipe's ``[train] encoder_lr_mult`` gives the encoder that
  many times the learning rate: segcli.training.optim.make_optimizer takes the encoder's variables
  (``encoder_of(model).weights``, all of them, so also while frozen) and steps them, matched by identity,
  with the scaled rate in the same optimizer.
- ``bn_momentum`` of the builders applies to the backbone's BatchNormalization layers too.

Listing: ``list_encoders()`` (names) and ``encoder_info(name, height, width)`` (parameters, GFLOPs per
image, channels per stride, the weights file), e.g. for a ``segcli models`` table.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
from keras import layers

from segcli.errors import ModelError, describe

ENCODER_LAYER = "encoder"
PREPROCESS_LAYER = "encoder_preprocess"
STRIDES = (2, 4, 8, 16, 32)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # keras.applications.imagenet_utils, mode="caffe"
# EfficientNet (v1): Keras' _notop.h5 stores the ImageNet std (not its square) as the Normalization
# variance; Keras' weights="imagenet" model then adds a Rescaling(1/sqrt(std)) (tensorflow issue 49930).
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)
_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class Backbone:
    """One keras.applications backbone.

    features: the layers tapped at strides 2, 4, 8, 16 (stride 32 is the backbone's output); ``"X>"``
        means the one layer applied to X's output (MobileNetV3 leaves its activations unnamed, and Keras
        numbers unnamed layers per process, so their names are not stable).
    fcn_features: FCN's taps at strides 2..32 where they differ (VGG16: pool1..pool5, as in the paper).
    preprocessing: ``"caffe"`` (BGR, mean subtracted: encoder_preprocess) or ``"builtin"`` (the
        backbone's own layers, ``extra`` enables them).
    """

    name: str
    constructor: str
    description: str
    features: tuple[str, ...]
    weights_file: str
    weights_url: str
    preprocessing: str = "builtin"
    fcn_features: tuple[str, ...] | None = None
    extra: dict = field(default_factory=dict)

    @property
    def file_url(self) -> str:
        """Where Keras fetches the ImageNet weights file (weights_file in the weights_url folder)."""
        return self.weights_url + self.weights_file


BACKBONES: dict[str, Backbone] = {b.name: b for b in (
    Backbone("vgg16", "VGG16", "VGG16 (FCN's encoder): 13 3x3 convs, no BN",
             ("block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3"),
             "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", _KERAS_APPS + "vgg16/",
             preprocessing="caffe",
             fcn_features=("block1_pool", "block2_pool", "block3_pool", "block4_pool", "block5_pool")),
    Backbone("resnet50", "ResNet50", "ResNet-50: bottleneck residual blocks with BN",
             ("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out"),
             "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", _KERAS_APPS + "resnet/",
             preprocessing="caffe"),
    Backbone("mobilenetv3small", "MobileNetV3Small", "MobileNetV3-Small (alpha 1.0): the cheapest",
             ("conv_bn>", "expanded_conv_1_expand_bn>", "expanded_conv_3_expand_bn>",
              "expanded_conv_8_expand_bn>"),
             "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5", _KERAS_APPS + "mobilenet_v3/",
             extra=dict(include_preprocessing=True)),
    Backbone("mobilenetv3large", "MobileNetV3Large", "MobileNetV3-Large (alpha 1.0)",
             ("expanded_conv_1_expand_bn>", "expanded_conv_3_expand_bn>", "expanded_conv_6_expand_bn>",
              "expanded_conv_12_expand_bn>"),
             "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5", _KERAS_APPS + "mobilenet_v3/",
             extra=dict(include_preprocessing=True)),
    Backbone("efficientnetb0", "EfficientNetB0", "EfficientNet-B0: MBConv blocks with squeeze-excite",
             ("block2a_expand_activation", "block3a_expand_activation", "block4a_expand_activation",
              "block6a_expand_activation"),
             "efficientnetb0_notop.h5", "https://storage.googleapis.com/keras-applications/"),
    Backbone("efficientnetv2b0", "EfficientNetV2B0", "EfficientNetV2-B0: fused-MBConv early, MBConv late",
             ("block1a_project_activation", "block2b_add", "block4a_expand_activation",
              "block6a_expand_activation"),
             "efficientnetv2-b0_notop.h5", _KERAS_APPS + "efficientnet_v2/",
             extra=dict(include_preprocessing=True)),
)}


def list_encoders() -> list[str]:
    """The pretrained backbones' names (the ``encoder`` values besides segcli's own vgg/strided)."""
    return list(BACKBONES)


def is_backbone(encoder) -> bool:
    return isinstance(encoder, str) and encoder in BACKBONES


def backbone_spec(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except (KeyError, TypeError):
        raise ModelError(f"unknown encoder {name!r}; valid: {', '.join(BACKBONES)}") from None


def keras_cache_dir() -> Path:
    """Where keras.applications keeps downloaded weights ($KERAS_HOME or ~/.keras, then models/)."""
    try:
        from keras.src.backend.config import keras_home
        home = keras_home()
    except Exception:  # a Keras without the private accessor
        home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(os.path.expanduser(home)) / "models"


def _weights_choice(weights):
    """None (random init), "imagenet", or a Path; anything else is a ModelError."""
    if weights is None or (isinstance(weights, str) and weights.strip().lower() in ("", "none")):
        return None
    if isinstance(weights, str) and weights.strip().lower() == "imagenet":
        return "imagenet"
    if isinstance(weights, (str, os.PathLike)):
        return Path(weights).expanduser()
    raise ModelError(f"encoder_weights must be 'imagenet', 'none' or a weights file path, got {weights!r}")


def _fix_efficientnet_variance(backbone: keras.Model) -> None:
    """Keras' efficientnetb0_notop.h5 holds the std as the Normalization variance (see IMAGENET_STDDEV_RGB):
    square it, so the input is normalised as Keras' own weights="imagenet" model does."""
    for layer in backbone.layers:
        variance = getattr(layer, "adapt_variance", None)
        if isinstance(layer, layers.Normalization) and variance is not None:
            value = keras.ops.convert_to_numpy(variance).ravel()
            if value.shape == (3,) and np.allclose(value, IMAGENET_STDDEV_RGB, atol=1e-6):
                variance.assign(np.square(value).reshape(variance.shape).astype(variance.dtype))
                layer.finalize_state()


def build_backbone(name: str, weights=None) -> keras.Model:
    """The keras.applications model ``name`` without its classifier, for (None, None, 3) input, with
    ``weights`` (None/"none", "imagenet" or a weights file) loaded. Its input is what the backbone expects
    (for "caffe" backbones: BGR minus the mean; see caffe_preprocess)."""
    spec = backbone_spec(name)
    choice = _weights_choice(weights)
    constructor = getattr(keras.applications, spec.constructor)
    if choice == "imagenet":
        try:
            with warnings.catch_warnings():  # Keras' note that (None, None) input loads the 224x224 weights: meant
                warnings.filterwarnings("ignore", message=".*input_shape. is undefined or non-square",
                                        category=UserWarning)
                return constructor(include_top=False, weights="imagenet", input_shape=(None, None, 3), **spec.extra)
        except Exception as exc:  # no network, a refused or truncated download, a bad cached file
            raise ModelError(
                f"could not get the ImageNet weights of encoder {name!r} ({describe(exc)}): fetch "
                f"{spec.weights_file} from {spec.file_url} and pass it with "
                f"--encoder-weights PATH, or put it in the Keras cache as "
                f"{keras_cache_dir() / spec.weights_file}") from None
    if choice is not None:
        if not choice.is_file():
            raise ModelError(f"no such encoder weights file (for encoder {name!r}: the backbone's _notop .h5 "
                             f"such as {spec.weights_file}, or a .weights.h5)", choice)
        if not (choice.name.endswith(".h5") or choice.name.endswith(".hdf5")):
            raise ModelError(f"not a weights file for encoder {name!r}: expected the backbone's _notop .h5 "
                             f"(such as {spec.weights_file}) or a .weights.h5", choice)
    model = constructor(include_top=False, weights=None, input_shape=(None, None, 3), **spec.extra)
    if choice is not None:
        with warnings.catch_warnings(record=True) as caught:  # Keras warns per layer it skips
            warnings.simplefilter("always")
            try:
                model.load_weights(str(choice))
                skipped = [w for w in caught if "freshly-initialized" in str(w.message)]
                if skipped:
                    raise ValueError(str(skipped[0].message))
            except Exception as exc:
                raise ModelError(f"does not fit encoder {name!r} ({describe(exc)}); expected the backbone's "
                                 f"_notop .h5 ({spec.weights_file}) or a .weights.h5 saved from it",
                                 choice) from None
        if name == "efficientnetb0":
            _fix_efficientnet_variance(model)
    return model


def _tap(backbone: keras.Model, spec: str):
    """The output tensor of layer ``spec`` (or, for "X>", of the one layer applied to X's output)."""
    follow = spec.endswith(">")
    layer_name = spec.rstrip(">")
    try:
        layer = backbone.get_layer(layer_name)
    except ValueError:
        raise ModelError(f"backbone {backbone.name!r} has no layer {layer_name!r} (another Keras version?)") from None
    tensor = layer.output
    if not follow:
        return tensor
    consumers = [node for lyr in backbone.layers for node in lyr._inbound_nodes
                 if any(t is tensor for t in node.input_tensors)]
    if len(consumers) != 1:
        raise ModelError(f"backbone {backbone.name!r}: {len(consumers)} layers follow {layer_name!r}, expected 1")
    return consumers[0].output_tensors[0]


def feature_layers(name: str, backbone: keras.Model, *, fcn: bool = False) -> list[str]:
    """The names of the layers whose outputs are the features at strides 2..32 (resolved, for reports)."""
    return [t._keras_history[0].name for t in _taps(backbone_spec(name), backbone, fcn)]


def _taps(spec: Backbone, backbone: keras.Model, fcn: bool) -> list:
    if fcn and spec.fcn_features:
        return [_tap(backbone, s) for s in spec.fcn_features]
    return [_tap(backbone, s) for s in spec.features] + [backbone.output]


def encoder_model(name: str, weights=None, *, fcn: bool = False, backbone: keras.Model | None = None) -> keras.Model:
    """The nested encoder: the backbone's layers as one model named ENCODER_LAYER, its outputs the
    features at strides 2, 4, 8, 16, 32 (FCN taps with ``fcn``). Takes what the backbone takes."""
    spec = backbone_spec(name)
    backbone = backbone if backbone is not None else build_backbone(name, weights)
    return keras.Model(backbone.inputs[0], _taps(spec, backbone, fcn), name=ENCODER_LAYER)


def caffe_preprocess(x, name: str = PREPROCESS_LAYER):
    """RGB 0..255 -> BGR minus the ImageNet mean (keras.applications' "caffe" mode) as a frozen 1x1 conv."""
    kernel = np.zeros((1, 1, 3, 3), dtype="float32")
    for out in range(3):
        kernel[0, 0, 2 - out, out] = 1.0  # output channel 0 (B) <- input channel 2, ...
    return layers.Conv2D(3, 1, trainable=False, name=name,
                         kernel_initializer=keras.initializers.Constant(kernel),
                         bias_initializer=keras.initializers.Constant(-np.asarray(CAFFE_MEAN_BGR, "float32")))(x)


def backbone_features(x, name: str, weights=None, *, fcn: bool = False) -> list:
    """Apply the backbone ``name`` (with its preprocessing) to ``x`` (float RGB 0..255); return the feature
    tensors at strides 2, 4, 8, 16, 32."""
    spec = backbone_spec(name)
    encoder = encoder_model(name, weights, fcn=fcn)
    if spec.preprocessing == "caffe":
        x = caffe_preprocess(x)
    return list(encoder(x))


# --- for the training code ------------------------------------------------------------------------

def encoder_of(model: keras.Model) -> keras.Model | None:
    """The nested pretrained encoder of a net built with a backbone (or loaded from its .keras file)."""
    for layer in model.layers:
        if layer.name == ENCODER_LAYER and isinstance(layer, keras.Model):
            return layer
    return None


def encoder_layers(model: keras.Model) -> list:
    """The layers of the pretrained encoder (empty for segcli's own encoders)."""
    encoder = encoder_of(model)
    return [] if encoder is None else list(encoder.layers)


def set_encoder_trainable(model: keras.Model, trainable: bool) -> bool:
    """Freeze (False) or unfreeze (True) the pretrained encoder; False when the model has none.

    While frozen its BatchNormalization layers run in inference mode (Keras 3). Compile again afterwards.
    """
    encoder = encoder_of(model)
    if encoder is None:
        return False
    encoder.trainable = bool(trainable)
    return True


def encoder_variables(model: keras.Model) -> list:
    """The encoder's trainable variables (empty while frozen or without an encoder)."""
    encoder = encoder_of(model)
    return [] if encoder is None else list(encoder.trainable_variables)


def decoder_variables(model: keras.Model) -> list:
    """The model's trainable variables outside the encoder."""
    inside = {id(v) for v in encoder_variables(model)}
    return [v for v in model.trainable_variables if id(v) not in inside]


# --- facts, for listings --------------------------------------------------------------------------

def encoder_info(name: str, height: int = 224, width: int = 224) -> dict:
    """Facts about backbone ``name`` (built without weights): parameters, GFLOPs per height x width image
    (the backbone alone, segcli.models.gflops), the feature layers and channels at strides 2..32, and the
    ImageNet weights file Keras fetches."""
    from segcli.models.info import count_params, gflops

    spec = backbone_spec(name)
    backbone = build_backbone(name)
    encoder = encoder_model(name, backbone=backbone)
    return {
        "name": name, "description": spec.description, "keras": f"keras.applications.{spec.constructor}",
        "params": count_params(encoder), "gflops": gflops(encoder, height, width), "size": (height, width),
        "feature_layers": feature_layers(name, backbone), "channels": [int(t.shape[-1]) for t in encoder.outputs],
        "preprocessing": spec.preprocessing, "weights_file": spec.weights_file,
        "weights_url": spec.file_url,
    }
