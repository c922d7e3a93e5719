"""segcli models: the registered architectures with their facts; models show: one model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from segcli.cli import render
from segcli.sizes import parse_size

app = typer.Typer(
    help="List the model architectures (parameters, GFLOPs per image) or show one model.",
    invoke_without_command=True,
)


@app.callback()
def models_main(
    ctx: typer.Context,
    size: str = typer.Option("360x480", "--size", help="Image size HEIGHTxWIDTH for the GFLOPs column."),
    classes: int = typer.Option(12, "--classes", min=1, help="Number of classes the models output."),
):
    """Without a command: a table of the registered architectures with parameters and GFLOPs per image, then
    the pretrained encoders (the backbone alone)."""
    if ctx.invoked_subcommand is not None:
        return
    from segcli.models import (build_model, count_params, encoder_info, gflops, list_encoders, list_models,
                               model_entry, output_stride)

    height, width = parse_size(size)
    rows = []
    for name in list_models():  # one model alive at a time
        model = build_model(name, classes)
        rows.append((name, model_entry(name).description, count_params(model), gflops(model, height, width),
                     output_stride(model)))
        del model
    encoders = []
    for name in list_encoders():  # built without weights: nothing is downloaded
        info = encoder_info(name, height, width)
        encoders.append((name, info["description"], info["params"], info["gflops"]))
    render.models_table(rows, classes, height, width, encoders=encoders)


@app.command("show")
def models_show(
    model: Optional[str] = typer.Argument(None, metavar="NAME|RECIPE.toml|MODEL.keras",
                                          help="A registered name, a recipe TOML file or a trained model file."),
    recipe_name: Optional[str] = typer.Option(None, "--recipe", metavar="RECIPE",
                                              help="The model of a recipe: a TOML file, or a shipped recipe's name."),
    classes: int = typer.Option(12, "--classes", min=1, help="Number of classes the model outputs."),
    size: str = typer.Option("360x480", "--size", help="Image size HEIGHTxWIDTH for GFLOPs."),
    summary: bool = typer.Option(False, "--summary", help="Also print the Keras layer summary."),
    encoder: str = typer.Option(None, "--encoder", metavar="NAME",
                                help="Build it with this encoder (vgg, strided, or a backbone: see `segcli models`)."),
):
    """One model's parameter count, GFLOPs per image and output stride (a registered model, or a recipe's); for
    a trained model file, also what it was trained on: its classes, crop size and precision."""
    from segcli.errors import SegcliError
    from segcli.models import (build_model, count_params, gflops, list_models, model_entry, model_spec_from_toml,
                               output_stride)
    from segcli.models.encoders import backbone_spec, is_backbone, keras_cache_dir
    from segcli.recipe import find_recipe

    height, width = parse_size(size)
    recipe = None
    if (model is None) == (recipe_name is None):
        raise SegcliError("give a model NAME (or RECIPE.toml) or --recipe RECIPE, one of them")
    if recipe_name is not None:  # as `train --recipe`: a file, or a shipped recipe's name
        recipe = find_recipe(recipe_name)
        name, options = model_spec_from_toml(recipe)
    elif _is_model_file(model, list_models()):  # a trained model: its own architecture and classes
        if encoder is not None:
            raise SegcliError("--encoder builds a registered model or a recipe's; a trained model file has its own",
                              model)
        _show_model_file(Path(model), height, width, summary)
        return
    elif model.lower().endswith(".toml") or (model not in list_models() and Path(model).is_file()):
        recipe = Path(model)
        name, options = model_spec_from_toml(recipe)
    else:
        name, options = model, {}
    if encoder is not None:  # checked as a recipe checks [model.options] encoder (one line listing the valid ones)
        from segcli.recipe import resolve

        options = dict(options, encoder=encoder)
        options = resolve(None, {"model": {"name": name, "options": options}}).model.options
    entry = model_entry(name)
    net = build_model(name, classes, **options)
    weights = None  # a Keras backbone: the ImageNet weights file, for users without a network
    if is_backbone(options.get("encoder")):
        spec = backbone_spec(options["encoder"])
        weights = (spec.weights_file, spec.file_url, keras_cache_dir())
    render.model_facts(name=name, recipe=recipe, description=entry.description, options=options, classes=classes,
                       params=count_params(net), trainable=_trainable(net),
                       height=height, width=width, flops=gflops(net, height, width), stride=output_stride(net),
                       imagenet_weights=weights)
    if summary:
        net.summary()


def _is_model_file(model: str, names: list[str]) -> bool:
    """Whether `models show MODEL` names a trained model file: a .keras path, or an existing file (not a
    registered name, not .toml) that is a zip, as .keras files are."""
    import zipfile

    path = Path(model)
    if model in names or model.lower().endswith(".toml"):
        return False
    return path.suffix.lower() == ".keras" or (path.is_file() and zipfile.is_zipfile(path))


def _show_model_file(path: Path, height: int, width: int, summary: bool) -> None:
    """The facts of a trained .keras file, loaded as stored by segcli.modelfile (a file that is not a model is
    its one-line error): the architecture and options its recipe records, its classes, the crop size and
    precision it was trained with (when the file records them), parameters, GFLOPs and output stride."""
    from segcli.modelfile import load_model
    from segcli.models import count_params, gflops

    loaded = load_model(path, precision=None)
    net, meta = loaded.model, loaded.meta
    recipe = meta.get("recipe") if isinstance(meta.get("recipe"), dict) else {}
    model_table, data_table = recipe.get("model") or {}, recipe.get("data") or {}
    size = data_table.get("size")
    render.trained_model_facts(
        path=path, name=meta.get("model_name") or model_table.get("name"), options=model_table.get("options") or {},
        classes=loaded.classes.names, trained_size=tuple(size) if isinstance(size, (list, tuple)) else None,
        precision=meta.get("precision"), params=count_params(net),
        trainable=_trainable(net), height=height, width=width,
        flops=gflops(net, height, width), stride=loaded.output_stride)
    if summary:
        net.summary()


def _trainable(net) -> int:
    """The number of trainable weights."""
    import math

    return sum(math.prod(w.shape) for w in net.trainable_weights)
