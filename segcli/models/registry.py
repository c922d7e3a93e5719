"""Names -> builder functions (+ preset options), and recipe ``[model]`` tables.

``register("fcn8s", build_fcn, description="...", variant="fcn8s")`` or as a decorator
``@register("mynet", description="...")``. ``build_model(name, num_classes, **options)`` builds one,
with options overriding the preset's.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import keras

from segcli.errors import ModelError
from segcli.tomlfile import read_toml


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., keras.Model]
    presets: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def defaults(self) -> dict[str, Any]:
        """The options it builds with when a recipe gives none: the builder's defaults, then the presets."""
        return {**builder_defaults(self.builder), **self.presets}


_REGISTRY: dict[str, ModelEntry] = {}


def builder_defaults(builder: Callable) -> dict[str, Any]:
    """A builder's options (its keyword arguments but num_classes), in order, each with its default
    (inspect.Parameter.empty where it has none): the one reader of builder signatures."""
    params = inspect.signature(builder).parameters.values()
    return {p.name: p.default for p in params
            if p.name != "num_classes" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def builder_options(builder: Callable) -> list[str]:
    return list(builder_defaults(builder))


def _check_options(name: str, builder: Callable, options: dict) -> None:
    valid = builder_options(builder)
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise ModelError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                         f"for model {name!r}; valid options: {', '.join(valid)}")


def register(name: str, builder: Callable | None = None, *, description: str = "", **preset_options):
    """Register ``builder`` under ``name`` with fixed preset options; usable as a call or a decorator."""

    def add(fn: Callable) -> Callable:
        _check_options(name, fn, preset_options)
        doc = (inspect.getdoc(fn) or "").strip().splitlines()
        _REGISTRY[name] = ModelEntry(name, fn, dict(preset_options), description or (doc[0] if doc else ""))
        return fn

    if builder is None:
        return add
    add(builder)
    return builder


def list_models() -> list[str]:
    """Registered names, in registration order."""
    return list(_REGISTRY)


def model_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ModelError(f"unknown model {name!r}; valid names: {', '.join(_REGISTRY)}") from None


def build_model(name: str, num_classes: int, **options) -> keras.Model:
    """Build the registered model ``name`` with ``num_classes`` outputs; ``options`` override its presets."""
    entry = model_entry(name)
    if "num_classes" in options:
        raise ModelError(f"num_classes is given separately, not as an option of model {name!r}")
    _check_options(name, entry.builder, options)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ModelError(f"num_classes must be a positive integer, got {num_classes!r}")
    kwargs = {**entry.presets, **options}
    if "name" in builder_options(entry.builder):
        kwargs.setdefault("name", name.replace("-", "_"))
    return entry.builder(num_classes, **kwargs)


def model_spec_from_toml(path: str | Path) -> tuple[str, dict[str, Any]]:
    """Read a recipe's ``[model]`` table: ``name = "..."`` and an optional ``[model.options]`` table.

    Other tables and keys are ignored. Raises ModelError for a missing file, bad TOML or no [model] table.
    """
    path = Path(path)
    doc = read_toml(path, ModelError)
    model = doc.get("model")
    if not isinstance(model, dict):
        raise ModelError("no [model] table (expected [model] with name = \"...\")", path)
    name = model.get("name")
    if not isinstance(name, str) or not name:
        raise ModelError("[model] has no name = \"...\" string", path)
    options = model.get("options", {})
    if not isinstance(options, dict):
        raise ModelError("[model.options] must be a table of builder keyword arguments", path)
    return name, dict(options)
