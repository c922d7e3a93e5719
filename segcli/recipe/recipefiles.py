"""Where recipes are: shipped ones (package data) found by name, and a run's recipe.toml written as TOML."""

from __future__ import annotations

from pathlib import Path

import tomli_w

from segcli.errors import SegcliError
from segcli.files import write_text

RECIPES_DIR = Path(__file__).resolve().parent.parent / "resources" / "recipes"  # package data: a checkout and a
# wheel alike


def shipped_recipes() -> list[str]:
    """The names of the shipped recipes, sorted."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml")) if RECIPES_DIR.is_dir() else []


def find_recipe(name_or_path: str | Path) -> Path:
    """A path, or the name of a shipped recipe (`camvid-unet` finds RECIPES_DIR/camvid-unet.toml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = RECIPES_DIR / f"{Path(str(name_or_path)).stem}.toml"
    if not path.suffix and shipped.is_file():
        return shipped
    available = shipped_recipes()
    hint = f" (shipped recipes: {', '.join(available)})" if available else ""
    raise SegcliError(f"no such recipe file{hint}", path)


def save(recipe, path: str | Path) -> None:
    """recipe.toml of a run folder (a segcli.recipe.Recipe): complete, so reading it back (load_resolved) gives an
    equal Recipe."""
    write_text(path, "# resolved by segcli: defaults < recipe file < command-line flags\n"
               + tomli_w.dumps(recipe.to_dict()))
