"""How an input pipeline makes its batches (`PipelineOptions`, make_pipeline's keywords) and what both engines
(segcli.data.tfdata, segcli.data.loader) derive from them, checked once here (`resolve`). Imports neither
TensorFlow nor Keras."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import psutil

from segcli.data.augment import Augment
from segcli.data.classes import ClassMap
from segcli.data.imageio import read_image
from segcli.data.formats.base import Pair
from segcli.data.masks import label_dtype
from segcli.errors import DataError

CACHE_SHARE_OF_RAM = 0.25


@dataclass(frozen=True)
class PipelineOptions:
    """How a pipeline makes its batches: make_pipeline's keywords, one object that both engines take (checked
    once, in `resolve`).

    training: seeded shuffle, then `augment` (None: no augmentation): random scale or short-side resize,
    crop (augment.crop, else `crop`; random unless center_crop) padded with 0 / ignore_index, flip; full
    batches only. Eval: optional `eval_short_side` resize, then a centre `crop`, else whole images.
    Both: padded at the bottom/right to a multiple of `pad_to_multiple`, and to the largest in the batch.
    cache: "auto" keeps decoded images in memory when they fit in a quarter of the RAM; True/False force it.
    void_as_class: void pixels become class K (see ClassMap.with_void_as_class); padding stays ignored.
    shuffle: None follows `training`.
    repeat: endless (model.fit with steps_per_epoch), reshuffled each pass; batches run across pass ends.
    shard (index, count): for one process of `count` (multi-host data parallel): `batch_size` stays the global
    batch (it must divide by count) and this process gets the index-th contiguous slice of each one, so the
    shards together are exactly the unsharded pipeline's batches, padded alike.
    start: with repeat, the endless stream begins at its batch `start` (a resumed run skips the batches of its
    finished epochs, so it trains on what a run that was never stopped trains on).
    label_mapping: stored mask value -> training ID (the Dataset's), applied to mask files as they are read
    (segcli.data.masks.load_labels).
    """

    batch_size: int
    training: bool
    augment: Augment | None = None
    crop: tuple[int, int] | None = None
    pad_to_multiple: int = 1
    eval_short_side: int | None = None
    seed: int = 0
    cache: bool | str = "auto"
    void_as_class: bool = False
    shuffle: bool | None = None
    repeat: bool = False
    shard: tuple[int, int] = (0, 1)
    start: int = 0
    label_mapping: dict[int, int] | None = None


def pipeline_options(options: PipelineOptions | None, keywords: dict) -> PipelineOptions:
    """`options` with `keywords` (PipelineOptions' fields) put in; without `options`, the keywords alone."""
    return replace(options, **keywords) if options is not None else PipelineOptions(**keywords)


class Settings(NamedTuple):
    """What both engines derive from the options (checked once, here), with the options themselves."""

    options: PipelineOptions
    pairs: list[Pair]
    aug: Augment | None  # training only
    crop: tuple[int, int] | None  # augment.crop, else `crop`
    random_crop: bool
    shuffle: bool
    pad_label: int  # padding's label: the ignore index (of the K+1 classes with void_as_class)
    label_dtype: np.dtype  # decoded labels: uint8, or int32 past 255
    use_cache: bool
    shard: tuple[int, int]  # (index, count)
    shard_slice: tuple[int, int]  # this process's rows of a global batch


def _fits_in_memory(pairs: list[Pair], label_bytes: int) -> bool:
    """Estimate the decoded size from the first image and compare it with a share of the RAM."""
    h, w = read_image(pairs[0].image).shape[:2]
    return len(pairs) * h * w * (3 + label_bytes) < CACHE_SHARE_OF_RAM * psutil.virtual_memory().total


def resolve(pairs, classes: ClassMap, options: PipelineOptions) -> Settings:
    o = options
    pairs = list(pairs)
    if not pairs:
        raise DataError("no image/mask pairs to build a pipeline from")
    if o.start and not o.repeat:
        raise ValueError("start (the first batch of an endless stream) needs repeat=True")
    if o.batch_size < 1 or o.pad_to_multiple < 1:
        raise DataError(f"batch size and pad multiple must be >= 1, got {o.batch_size} and {o.pad_to_multiple}")
    index, count = (int(v) for v in o.shard)
    if count < 1 or not 0 <= index < count or o.batch_size % count:
        raise DataError(f"shard {index} of {count}: needs 0 <= index < count and a batch size ({o.batch_size}) "
                        "that divides by count")
    aug = o.augment if o.training else None
    labels = np.dtype(label_dtype(classes))
    local = o.batch_size // count
    return Settings(
        options=o, pairs=pairs, aug=aug,
        crop=tuple(aug.crop) if aug and aug.crop else (tuple(o.crop) if o.crop else None),
        random_crop=o.training and not (aug and aug.center_crop),
        shuffle=o.training if o.shuffle is None else bool(o.shuffle),
        pad_label=classes.with_void_as_class().ignore_index if o.void_as_class else classes.ignore_index,
        label_dtype=labels,
        use_cache=_fits_in_memory(pairs, labels.itemsize) if o.cache == "auto" else bool(o.cache),
        shard=(index, count), shard_slice=(index * local, (index + 1) * local))
