"""Class names, colours and the ignore ("void") label; classes.json files.

classes.json::

    {"classes": [{"name": "Sky", "color": [128, 128, 128]}, ...],
     "ignore_index": 11, "ignore_name": "Void", "ignore_color": [0, 0, 0]}
"""

from __future__ import annotations

import colorsys
import json
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np

from segcli.errors import DataError
from segcli.files import write_json

# tab20-like: the ten strong colours first, then their light partners (black stays the void colour)
_BASE_COLORS = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
)


def _color(value, what: str) -> tuple[int, int, int]:
    """[r, g, b]: three integers 0..255 (NumPy integers too; not floats, text or booleans)."""
    try:
        rgb = tuple(value)
    except TypeError:
        rgb = ()
    if len(rgb) != 3 or not all(isinstance(c, (int, np.integer)) and not isinstance(c, (bool, np.bool_))
                                and 0 <= c <= 255 for c in rgb):
        raise DataError(f"{what}: colour must be [r, g, b], three integers 0..255, got {_shown(value)}")
    return tuple(int(c) for c in rgb)


def _shown(value) -> str:
    return repr(list(value) if isinstance(value, tuple) else value)


FILE_KEYS = ("classes", "ignore_index", "ignore_name", "ignore_color")  # a classes file's keys
CLASS_KEYS = ("name", "color")  # the keys of one entry of its "classes" list


def _file_ignore_index(value, k: int) -> int:
    """A classes file's ignore_index: an integer (11.0 counts as 11; not "11", true or 1e9) from K to 255 (K, the
    number of classes, when K > 255): a class index cannot be the ignore label."""
    given, high = value, max(255, k)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not k <= value <= high:
        raise DataError(f"ignore_index must be an integer from {k} to {high} (0..{k - 1} are the classes), "
                        f"got {given!r}")
    return value


def _check_file_dict(d: dict) -> None:
    """What a classes file must hold beyond what any ClassMap needs: known keys, unique names and colours,
    an integer ignore_index in range; DataError naming the first mistake."""
    unknown = [key for key in d if key not in FILE_KEYS]
    if unknown:
        raise DataError(f"unknown key {unknown[0]!r}; valid keys: {', '.join(FILE_KEYS)}")
    entries = d["classes"]
    for i, entry in enumerate(entries):
        if isinstance(entry, dict):
            extra = [key for key in entry if key not in CLASS_KEYS]
            if extra:
                raise DataError(f"classes[{i}]: unknown key {extra[0]!r}; valid keys: {', '.join(CLASS_KEYS)}")
            if not isinstance(entry.get("name"), str) or not entry["name"].strip():
                raise DataError(f"classes[{i}]: name must be a non-empty string, got {entry.get('name')!r}")
    if "ignore_index" in d:
        _file_ignore_index(d["ignore_index"], len(entries))
    if "ignore_name" in d and not isinstance(d["ignore_name"], str):
        raise DataError(f"ignore_name must be a string, got {d['ignore_name']!r}")


def _check_unique(classes: ClassMap) -> None:
    """Names unique (each class has its own IoU column), the ignore name apart; colours unique, the ignore colour
    apart (an RGB mask's colour must name one label)."""
    seen: dict = {}
    for i, name in enumerate(classes.names):
        if name in seen:
            raise DataError(f"classes[{i}]: name {name!r} is also classes[{seen[name]}]'s; class names must be unique")
        seen[name] = i
    if classes.ignore_name in seen:
        raise DataError(f"ignore_name {classes.ignore_name!r} is also classes[{seen[classes.ignore_name]}]'s name; "
                        "it must differ from the class names")
    seen = {}
    for i, color in enumerate(classes.colors):
        if color in seen:
            j = seen[color]
            raise DataError(f"classes[{i}] ({classes.names[i]!r}): colour {list(color)} is also classes[{j}]'s "
                            f"({classes.names[j]!r}); class colours must be unique")
        seen[color] = i
    if classes.ignore_color in seen:
        i = seen[classes.ignore_color]
        raise DataError(f"ignore_color {list(classes.ignore_color)} is also classes[{i}]'s ({classes.names[i]!r}); "
                        "it must differ from the class colours")


@dataclass(frozen=True)
class ClassMap:
    """K named classes with display colours; label `ignore_index` marks pixels that are not scored."""

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    ignore_index: int = 255
    ignore_name: str = "void"
    ignore_color: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self):
        names = tuple(str(n) for n in self.names)
        if not names:
            raise DataError("classes: at least one class is needed")
        if len(self.colors) != len(names):
            raise DataError(f"classes: {len(names)} names but {len(self.colors)} colours")
        colors = tuple(_color(c, f"class {n!r}") for n, c in zip(names, self.colors))
        ignore = int(self.ignore_index)
        if 0 <= ignore < len(names) or ignore < 0:
            raise DataError(f"classes: ignore_index {ignore} must not be a class index (0..{len(names) - 1}) "
                            "nor negative")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "colors", colors)
        object.__setattr__(self, "ignore_index", ignore)
        object.__setattr__(self, "ignore_name", str(self.ignore_name))
        object.__setattr__(self, "ignore_color", _color(self.ignore_color, "ignore_color"))

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def palette(self) -> np.ndarray:
        """(256, 3) uint8: class colours at their index, the ignore colour at ignore_index, the rest black."""
        pal = np.zeros((256, 3), np.uint8)
        pal[: min(self.num_classes, 256)] = self.colors[:256]
        if self.ignore_index < 256:
            pal[self.ignore_index] = self.ignore_color
        return pal

    def with_void_as_class(self) -> ClassMap:
        """K+1 classes: void becomes class K. ignore_index stays, unless it was K itself (CamVid's 11): then 255."""
        k = self.num_classes
        ignore = self.ignore_index if self.ignore_index != k else (255 if k < 255 else k + 1)
        return replace(self, names=self.names + (self.ignore_name,), colors=self.colors + (self.ignore_color,),
                       ignore_index=ignore)

    def to_dict(self) -> dict:
        return {
            "classes": [{"name": n, "color": list(c)} for n, c in zip(self.names, self.colors)],
            "ignore_index": self.ignore_index,
            "ignore_name": self.ignore_name,
            "ignore_color": list(self.ignore_color),
        }

    @classmethod
    def from_dict(cls, d, *, strict: bool = False) -> ClassMap:
        """A ClassMap from a classes file's dict. strict (a classes file, `load_classes`): also known keys only,
        unique names and colours, and an integer ignore_index in range (a model's own record is read as saved)."""
        if not isinstance(d, dict) or not isinstance(d.get("classes"), list):
            raise DataError('classes file needs a "classes" list of {"name": ..., "color": [r, g, b]}')
        if strict:
            _check_file_dict(d)
        entries = d["classes"]
        names, colors = [], []
        for i, entry in enumerate(entries):
            if isinstance(entry, str):  # a bare name: take the default colour
                entry = {"name": entry}
            if not isinstance(entry, dict) or "name" not in entry:
                raise DataError(f'classes[{i}]: expected {{"name": ..., "color": [r, g, b]}}, got {entry!r}')
            names.append(entry["name"])
            colors.append(entry.get("color", _default_color(i)))
        try:
            ignore = int(d.get("ignore_index", 255))
        except (TypeError, ValueError):
            raise DataError(f"ignore_index must be an integer, got {d.get('ignore_index')!r}") from None
        classes = cls(tuple(names), tuple(colors), ignore, d.get("ignore_name", "void"),
                      d.get("ignore_color", (0, 0, 0)))
        if strict:
            _check_unique(classes)
        return classes

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())


def load_classes(path: str | Path) -> ClassMap:
    """Read a classes.json, checked (ClassMap.from_dict strict); DataError naming the file and its first mistake."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such classes file", path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"not a valid JSON classes file ({exc})", path) from None
    try:
        return ClassMap.from_dict(data, strict=True)
    except DataError as exc:
        raise DataError(exc.problem, path) from None


def _default_color(i: int) -> tuple[int, int, int]:
    if i < len(_BASE_COLORS):
        return _BASE_COLORS[i]
    hue = (i * 0.618033988749895) % 1.0  # golden-ratio hues: neighbours stay distinguishable
    sat, val = (0.65, 0.95) if i % 2 else (0.85, 0.75)
    return tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(hue, sat, val))


def default_classes(num_classes: int, names=None) -> ClassMap:
    """`num_classes` classes named class_0.. (or `names`) with a fixed, readable palette; void = 255."""
    if names is None:
        names = [f"class_{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise DataError(f"{num_classes} classes but {len(names)} names")
    ignore = 255 if num_classes <= 255 else num_classes
    return ClassMap(tuple(names), tuple(_default_color(i) for i in range(num_classes)), ignore)


def camvid_classes() -> ClassMap:
    """The 11 CamVid classes (SegNet's version) with their usual colours; void = 11. The file the CamVid recipes
    name (`classes = "camvid-classes.json"`), shipped beside them."""
    text = (resources.files("segcli") / "resources" / "recipes" / "camvid-classes.json").read_text(encoding="utf-8")
    return ClassMap.from_dict(json.loads(text))
