"""A dataset file: a YAML (.yaml, .yml) or TOML (.toml) file that names a dataset's parts, given where a dataset
folder goes (`segcli train unet data.yaml`). Its keys:

- `path`: the dataset's root; relative to the file's folder, else (as Ultralytics reads it) to the working
  directory; absent: the file's folder.
- `train`, `val`, `test`: each a folder or a list file (.txt, one image path a line; a relative line is
  relative to the list file), or a list of those, relative to `path` (a missing `../x` is also tried as `x`,
  as Ultralytics does). Without them, the root's own format is detected (segcli.data.formats).
- `masks_dir` (Ultralytics): an image's mask is the file of the same stem (.png, .bmp, .tif) at the image's
  path with its last `images` folder replaced by `masks_dir`. Without it, a split folder pairs with its
  `<folder>annot` beside it, or holds images/ + masks/, or its images/ path has a masks/ twin.
- `names`: the classes, a list or an {id: name} mapping (ids 0..K-1); `colors`: [r, g, b] per class, a
  list or an {id: colour} mapping (default: segcli's palette).
- `label_mapping`: {stored value: training ID or "ignore_label"}; `ignore_label` (default 255): the label of
  pixels not scored. As Ultralytics reads it, a stored value the mapping does not list keeps its value: a
  class ID stays that class (`{11: ignore_label}` maps only 11), any other value is ignored.
- `format`: a registered format's name (`segcli.data.formats.list_formats()`) that reads `path`; the file's
  classes and mapping, when it gives them, replace the format's.

An Ultralytics semantic-segmentation dataset YAML (`yolo semantic train`) is read as it is: its keys are these,
and its `download` and `nc` are accepted (nc must match names).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from segcli.data.classes import ClassMap, default_classes
from segcli.data.formats.base import SPLITS, FormatData, Pair, Problem, match_pairs
from segcli.data.formats.registry import find_format, get_format, list_formats, register_format
from segcli.data.formats.yolo import yolo_classes
from segcli.data.imageio import IMAGE_EXTS
from segcli.errors import DataError
from segcli.tomlfile import read_toml

SUFFIXES = (".yaml", ".yml", ".toml")
KEYS = ("path", *SPLITS, "masks_dir", "names", "colors", "label_mapping", "ignore_label", "format")
ACCEPTED = ("download", "nc")  # Ultralytics' keys that segcli does not use (nc: checked against names)
MASK_SUFFIXES = (".png", ".PNG", ".bmp", ".tif", ".tiff")  # Ultralytics' mask extensions (and .tiff)
IGNORE_WORD = "ignore_label"  # a label_mapping value: the pixel is not scored
NAME = "dataset-file"


def is_dataset_file(path: str | Path) -> bool:
    """A file whose suffix makes it a dataset file (not what it holds)."""
    return Path(path).is_file() and Path(path).suffix.lower() in SUFFIXES


def data_folders(data: str | Path | None) -> list[Path]:
    """What a command reads for its data argument, for the output guards (segcli.files.guard_output): the
    argument itself and, for a dataset file, its root folder (a file whose root cannot be read adds nothing:
    opening the dataset says what is wrong with it)."""
    if data is None:
        return []
    folders = [Path(data)]
    if is_dataset_file(data):
        try:
            folders.append(_root(read_keys(Path(data)), Path(data)))
        except DataError:
            pass
    return folders


def _fail(file: Path, key: str, problem: str):
    raise DataError(f"{key}: {problem}", file)


def read_keys(file: Path) -> dict:
    """The file's top-level keys, checked to be known; DataError naming the file (and the key)."""
    if file.suffix.lower() == ".toml":
        data = read_toml(file, DataError)
    else:
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise DataError("not valid YAML: a binary file, not text", file) from None
        except yaml.YAMLError as exc:
            raise DataError(f"not valid YAML: {' '.join(str(exc).split())}", file) from None
        except OSError as exc:
            raise DataError(f"cannot read: {exc.strerror or exc}", file) from None
    if not isinstance(data, dict):
        raise DataError(f"a dataset file holds keys ({', '.join(KEYS)}); found {type(data).__name__}", file)
    if isinstance(data.get("model"), dict):  # segcli's recipe: [model], [data], [train] tables
        raise DataError("a recipe (its [model] table), not a dataset file: pass it with --recipe, and the data "
                        "(a folder or a dataset file) as the argument", file)
    for key in data:
        if key not in KEYS + ACCEPTED:
            _fail(file, str(key), f"unknown key; valid keys: {', '.join(KEYS)}")
    return data


def _integer(value, file: Path, key: str, what: str) -> int:
    """An integer, also written as text (TOML's keys are text: "7")."""
    if isinstance(value, bool):
        _fail(file, key, f"{what} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    _fail(file, key, f"{what} must be an integer, got {value!r}")


def _by_id(value, file: Path, key: str) -> list | None:
    """A list, or an {id: value} mapping with ids 0..K-1, as a list in id order."""
    if value is None:
        return None
    if isinstance(value, list):
        return value
    if not isinstance(value, dict):
        _fail(file, key, f"expected a list or an {{id: value}} mapping, got {type(value).__name__}")
    items = {_integer(k, file, key, "an id"): v for k, v in value.items()}
    if sorted(items) != list(range(len(items))):
        _fail(file, key, f"ids must be 0..{len(items) - 1}, got {', '.join(str(i) for i in sorted(items))}")
    return [items[i] for i in range(len(items))]


def _classes(data: dict, file: Path) -> ClassMap | None:
    names = _by_id(data.get("names"), file, "names")
    colors = _by_id(data.get("colors"), file, "colors")
    ignore = _integer(data.get("ignore_label", 255), file, "ignore_label", "ignore_label")
    if names is None:
        if colors is not None:
            _fail(file, "colors", "colours need the names they belong to (names)")
        return None
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        _fail(file, "names", "a non-empty list of class names (text) is needed")
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:  # each class has its own IoU column, by name
        _fail(file, "names", f"{twice!r} is listed twice (ids {names.index(twice)} and "
                             f"{names.index(twice, names.index(twice) + 1)}); class names must be unique")
    if "nc" in data and data["nc"] != len(names):
        _fail(file, "nc", f"{data['nc']!r}, but names lists {len(names)} classes")
    if colors is not None and len(colors) != len(names):
        _fail(file, "colors", f"{len(colors)} colours for {len(names)} names")
    try:
        base = default_classes(len(names), names)
        return ClassMap(base.names, tuple(colors) if colors is not None else base.colors, ignore)
    except DataError as exc:
        key = "ignore_label" if "ignore_index" in exc.problem else "colors" if "colour" in exc.problem else "names"
        _fail(file, key, exc.problem.removeprefix("classes: "))


def _mapping(data: dict, file: Path, classes: ClassMap | None) -> dict[int, int] | None:
    value = data.get("label_mapping")
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        _fail(file, "label_mapping", "expected a {stored value: training ID} mapping")
    ignore = _integer(data.get("ignore_label", 255), file, "ignore_label", "ignore_label")
    mapping = {}
    for stored, label in value.items():
        stored = _integer(stored, file, "label_mapping", "a stored value")
        label = ignore if label == IGNORE_WORD else _integer(label, file, "label_mapping",
                                                              f"the training ID of {stored} (or {IGNORE_WORD})")
        if classes is not None and not (0 <= label < classes.num_classes or label == ignore):
            _fail(file, "label_mapping", f"{stored} -> {label}, but the classes are 0..{classes.num_classes - 1} "
                                         f"(ignore_label {ignore})")
        if stored >= 0:  # a negative value (Cityscapes' -1) never occurs in a mask file
            mapping[stored] = label
    return mapping


def _root(data: dict, file: Path) -> Path:
    value = data.get("path")
    if value is None:
        return file.parent
    if not isinstance(value, str) or not value.strip():
        _fail(file, "path", f"expected a folder, got {value!r}")
    path = Path(value).expanduser()
    tried = [path] if path.is_absolute() else [file.parent / path, Path.cwd() / path]
    for candidate in tried:
        if candidate.is_dir():
            return candidate
    _fail(file, "path", f"{value!r} is not a folder (looked for {' and '.join(str(t) for t in tried)}; Ultralytics' "
                        "datasets_dir setting is not read: give path relative to this file, or absolute)")


def _entries(data: dict, key: str, root: Path, file: Path) -> list[Path]:
    """The folders or list files a split names, resolved against the root (Ultralytics' `../` fallback too)."""
    value = data[key]
    values = value if isinstance(value, list) else [value]
    found = []
    for entry in values:
        if not isinstance(entry, str) or not entry.strip():
            _fail(file, key, f"expected a folder or a list file (or a list of them), got {entry!r}")
        path = root / Path(entry).expanduser()
        if not path.exists() and entry.startswith("../"):
            path = root / entry[3:]
        if not path.exists():
            _fail(file, key, f"{entry!r}: no such folder or list file in {root}")
        found.append(path)
    return found


def _images(entry: Path, problems: list[Problem]) -> list[Path]:
    """The images a split entry names: a folder's image files (sub-folders too), or a list file's lines."""
    if entry.is_dir():
        return sorted(p for p in entry.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                      and not p.name.startswith("."))
    try:
        lines = [line.strip() for line in entry.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the list file ({exc})", entry) from None
    images = []
    for n, line in enumerate(lines, start=1):
        path = Path(line).expanduser()
        path = path if path.is_absolute() or not (entry.parent / path).exists() else entry.parent / path
        if path.is_file():
            images.append(path)
        else:
            problems.append(Problem(entry, f"line {n}: {line}: no such image"))
    return images


def _twin_mask(image: Path, masks_dir: str) -> Path | None:
    """The image's path with its last `images` folder replaced by masks_dir, and a mask suffix; None: none."""
    parts = image.parts
    where = [i for i, part in enumerate(parts[:-1]) if part == "images"]
    if not where:
        return None
    stem = Path(*parts[:where[-1]], masks_dir, *parts[where[-1] + 1:]).with_suffix("")
    return next((m for m in (stem.with_name(stem.name + s) for s in MASK_SUFFIXES) if m.is_file()), None)


def _twin_pairs(images: list[Path], masks_dir: str, problems: list[Problem]) -> list[Pair]:
    pairs = []
    for image in images:
        mask = _twin_mask(image, masks_dir)
        if mask is None:
            where = "its path has no images/ folder" if "images" not in image.parts[:-1] else \
                f"nothing named {image.stem}.png (or .bmp, .tif) in its {masks_dir}/ twin folder"
            problems.append(Problem(image, f"image without mask ({where})"))
        else:
            pairs.append(Pair(image, mask))
    return pairs


def _split_pairs(entry: Path, masks_dir: str | None, problems: list[Problem]) -> list[Pair]:
    if masks_dir is None and entry.is_dir():
        if (entry / "images").is_dir() and (entry / "masks").is_dir():
            return match_pairs(entry / "images", entry / "masks", problems)
        annot = entry.with_name(entry.name + "annot")
        if annot.is_dir():
            return match_pairs(entry, annot, problems)
    return _twin_pairs(_images(entry, problems), masks_dir or "masks", problems)


def inner_name(data: dict, root: Path) -> str:
    """The name of the format a dataset file reads its root with (its format key, else the detected one)."""
    return data["format"] if "format" in data else find_format(root).name


def read_dataset_file(file: Path, problems: list[Problem]) -> FormatData:
    data = read_keys(file)
    root = _root(data, file)
    classes = _classes(data, file)
    mapping = _mapping(data, file, classes)
    masks_dir = data.get("masks_dir")
    if masks_dir is not None and (not isinstance(masks_dir, str) or not masks_dir.strip() or "/" in masks_dir):
        _fail(file, "masks_dir", f"expected a folder name (masks), got {masks_dir!r}")
    inner = None
    if "format" in data:
        name = data["format"]
        if name == NAME or name not in list_formats():
            _fail(file, "format", f"{name!r} is not a dataset format; known: "
                                  f"{', '.join(f for f in list_formats() if f != NAME)}")
        inner = get_format(name).read(root, problems)
        if name == "yolo" and classes is not None:  # YOLO's names: background in front, as the format adds it
            classes = yolo_classes(list(classes.names))[0]
    elif not any(s in data for s in SPLITS):
        inner = find_format(root).read(root, problems)
    if inner is not None:
        splits, notices = inner.splits, list(inner.notices)
        drawn = any(p.reader is not None for pairs in splits.values() for p in pairs)
        if mapping is not None and drawn:  # a reader draws training IDs itself: a mapping would go unused
            _fail(file, "label_mapping", f"the {inner_name(data, root)} format draws its labels from annotations, "
                                         "so there are no stored values to map; leave label_mapping out (names "
                                         "renames the classes)")
    else:
        splits = {s: [p for entry in _entries(data, s, root, file) for p in _split_pairs(entry, masks_dir, problems)]
                  for s in SPLITS if s in data}
        notices = []
        if not any(splits.values()):
            found = (f"{len(problems)} files without their pair, e.g. {problems[0].path}: {problems[0].problem}"
                     if problems else "no images")
            yolo = " (Ultralytics reads YOLO polygon labels then: add format: yolo)" if "yolo" in list_formats() else ""
            how = "" if masks_dir else ("; without masks_dir, masks are looked for in a masks/ twin of each images/ "
                                        f"folder, in <folder>annot/ or in <folder>/masks{yolo}")
            _fail(file, "masks_dir" if masks_dir else ", ".join(s for s in SPLITS if s in data),
                  f"no image/mask pairs found ({found}){how}")
    return FormatData(
        splits=splits,
        base=file if classes is not None else (inner.base if inner is not None else root),  # named: no classes.json
        classes=classes or (inner.classes if inner is not None else None),
        encoding=inner.encoding if inner is not None else None,
        label_mapping=mapping if mapping is not None else (inner.label_mapping if inner is not None else None),
        notices=notices, classes_source=f"file:{file}" if classes is not None else None,
        keep_unmapped=mapping is not None)


class DatasetFile:
    name = NAME
    description = ("a dataset file (.yaml, .yml, .toml): path, train/val/test folders or list files, names, "
                   "label_mapping; Ultralytics' semantic-segmentation YAMLs as they are")

    def detect(self, root: Path) -> bool:
        return is_dataset_file(root)

    def read(self, root: Path, problems: list[Problem]) -> FormatData:
        return read_dataset_file(root, problems)

    def hint(self, root: Path) -> str | None:
        return None


register_format(DatasetFile())
