"""Where predict's images come from: files, folders of images and glob patterns, resolved to image files
(`resolve_inputs`) and read one at a time with segcli.data's reader (`read_images`)."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from segcli.data import IMAGE_EXTS, read_image
from segcli.errors import DataError

_GLOB_CHARS = set("*?[")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))


def _glob_matches(pattern: str) -> list[Path]:
    """What a glob pattern matches, its leading folders that exist as named taken literally (a folder really
    called `shots[1]` is that folder, not the pattern for `shots1`); when that finds nothing, the pattern as is."""
    parts = Path(pattern).parts
    literal = 0
    while literal < len(parts) - 1 and os.path.isdir(os.path.join(*parts[:literal + 1])):
        literal += 1
    patterns = [pattern]
    if literal:
        patterns.insert(0, os.path.join(glob.escape(os.path.join(*parts[:literal])), *parts[literal:]))
    for candidate in patterns:
        matches = sorted(Path(p) for p in glob.glob(candidate, recursive=True))
        matches = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_EXTS]
        if matches:
            return matches
    return []


def resolve_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders as their images (sorted, not recursive), glob patterns as their matches.

    DataError for a path that does not exist, a pattern that matches nothing or a folder without images.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    found: list[Path] = []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            images = _images_in(path)
            if not images:
                raise DataError(f"no images in this folder ({', '.join(sorted(IMAGE_EXTS))})", path)
            found += images
        elif _GLOB_CHARS & set(text):
            matches = _glob_matches(os.path.expanduser(text))
            if not matches:
                raise DataError("no image files match this pattern", text)
            found += matches
        else:
            raise DataError("no such file or directory", path)
    unique, seen = [], set()
    for path in found:
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    if not unique:
        raise DataError("no input images given")
    return unique


def read_images(files: Iterable[Path]) -> Iterator[tuple[Path, np.ndarray]]:
    """(path, (H, W, 3) uint8 RGB image) for each file, read lazily: one image is read when it is asked for."""
    for path in files:
        yield path, read_image(path)


__all__ = ["resolve_inputs", "read_images"]
