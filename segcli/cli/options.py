"""Option helpers shared by several commands (one place for each)."""

from __future__ import annotations

from segcli.sizes import parse_size

RUN_PRECISION_HELP = ("auto|float32|mixed_float16|mixed_bfloat16 to run the model under (auto: mixed_float16 "
                      "with a GPU, mixed_bfloat16 on a CPU with native bf16 (AVX512-BF16 or AMX), else float32).")

ENGINE_HELP = ("What runs MODEL, where a file has a choice: an .onnx runs on onnxruntime (default) or openvino; "
               "each other file has one engine (.keras Keras, .xml OpenVINO, .tflite LiteRT, a SavedModel folder "
               "TensorFlow). Exported engines run float32; OpenVINO follows --precision (auto: bf16 where Keras' is).")

TTA_HELP = ("Test-time augmentation: flip (image + its mirror), scales (e.g. 0.75,1.25; 1 always runs) or both "
            "(flip,0.75,1.25); softmax probabilities averaged. One forward pass per flip and scale.")


PALETTE_BY_COLOUR_HELP = ("Palette masks: map each palette entry to the class with its colour in classes.json "
                          "(default: the palette index is the class).")


def tta_flag(text: str | None):
    """--tta checked once, before the model loads: a segcli.inference.TTA, or None when not given."""
    from segcli.inference import parse_tta

    return parse_tta(text)


def size_flag(text: str | None) -> list[int] | None:
    """--size HEIGHTxWIDTH as the [height, width] a recipe holds; None when the flag was not given."""
    size = parse_size(text)
    return None if size is None else list(size)


def list_flag(text: str | None) -> list | None:
    """A comma list flag (--scale 0.5,2.0, --train-splits train,val) as the list a recipe holds, numbers as
    numbers; None when the flag was not given. segcli.recipe checks the values."""
    from segcli.recipe import from_text

    return None if text is None else [from_text(part.strip()) for part in text.split(",")]


def overrides(**tables: dict) -> dict:
    """Recipe overrides holding only the flags given: {"train": {"epochs": "5"}}, {} when none. Numbers stay
    the flags' text: segcli.recipe checks every value (and names the flag) in one place."""
    given = {table: {key: value for key, value in values.items() if value is not None}
             for table, values in tables.items()}
    return {table: values for table, values in given.items() if values}


ENCODER_HELP = ("Encoder: vgg or strided (segcli's own), or a Keras ImageNet backbone: vgg16, resnet50, "
                "mobilenetv3small, ... (see `segcli models`): the recipe's model option encoder.")
ENCODER_WEIGHTS_HELP = ("Backbone weights: none (random), imagenet (downloaded once into ~/.keras/models) or a "
                        "weights file (the backbone's _notop .h5, or a .weights.h5): the recipe's model option "
                        "encoder_weights.")


def encoder_flags(encoder: str | None, weights: str | None) -> dict | None:
    """--encoder / --encoder-weights as [model.options] overrides (None when neither was given); a relative
    weights path is made absolute against the working directory (a recipe file's is against its folder)."""
    from segcli.recipe import weights_path

    options = {"encoder": encoder, "encoder_weights": None if weights is None else weights_path(weights)}
    options = {key: value for key, value in options.items() if value is not None}
    return options or None
