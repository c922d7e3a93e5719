"""The benchmark's data: a train-only folder of exactly the pairs a run needs, linked from a dataset (CamVid
beside the checkout by default) or fabricated as synthetic PNGs; the large image of the tiled section; the
in-memory crops of the precision section. No TensorFlow at import."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from segcli.bench.settings import BenchSettings
from segcli.errors import SegcliError

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "camvid"
VAL_FRACTION = 1e-9  # open_dataset holds out at least one pair: exactly one here


@dataclass
class BenchData:
    root: Path            # a folder with train/ + trainannot/ + classes.json: exactly `pairs` pairs, no val split
    source: str           # the dataset it links to, or "synthetic"
    pairs: int
    classes_note: str


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        dst.symlink_to(src.resolve())
    except OSError:
        shutil.copyfile(src, dst)


def write_synthetic_dataset(root: str | Path, pairs: int, size: tuple[int, int] = (360, 480), seed: int = 0) -> Path:
    """`pairs` RGB PNG images with index-PNG masks (CamVid's 11 classes + void 11) in root/train(annot)."""
    import numpy as np

    from segcli.data import camvid_classes, write_image

    root = Path(root)
    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "trainannot").mkdir(parents=True, exist_ok=True)
    classes = camvid_classes()
    classes.save(root / "classes.json")
    palette = classes.palette()
    h, w = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(pairs):
        # bands and a disc of different classes, shifted per image, so crops see several classes
        labels = ((yy * 4 // h) * 3 + (xx * 3 // w) + i) % (classes.num_classes + 1)
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(h // 8, h // 3)
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, classes.num_classes)
        labels = labels.astype(np.uint8)
        noise = rng.normal(0, 12, (h, w, 3))
        image = np.clip(palette[labels].astype(np.float32) + noise, 0, 255).astype(np.uint8)
        write_image(root / "train" / f"synthetic_{i:05d}.png", image)
        write_image(root / "trainannot" / f"synthetic_{i:05d}.png", labels)
    return root


def prepare_data(data: str | Path | None, pairs: int, workdir: str | Path,
                 synthetic_size: tuple[int, int] = (360, 480)) -> BenchData:
    """A train-only folder of exactly `pairs` pairs (the train path holds one out as val: pairs - 1 = steps x batch).

    data=None: ../shared/data/camvid beside the checkout when present, else synthetic PNGs. The pairs of a
    real dataset are linked (cycled when it has fewer); its classes.json is kept, and without one CamVid's
    classes are assumed for index masks with values 0..11 (else the classes inferred from the masks).
    """
    from segcli.data import camvid_classes, open_dataset

    out = Path(workdir) / "data"
    if out.exists():
        shutil.rmtree(out)
    if data is None and not (DEFAULT_DATA / "train").is_dir():
        write_synthetic_dataset(out, pairs, synthetic_size)
        return BenchData(out, "synthetic", pairs, f"CamVid's 11 + void (synthetic {synthetic_size[0]}x"
                                                   f"{synthetic_size[1]} PNGs)")
    source = Path(data) if data is not None else DEFAULT_DATA
    dataset = open_dataset(source, val_fraction=0.0)
    train_pairs = dataset.splits.get("train") or dataset.pairs
    if not train_pairs:
        raise SegcliError("no training pairs found", source)
    classes, note = dataset.classes, dataset.classes_source
    if dataset.classes_source == "inferred":
        camvid = camvid_classes()
        if dataset.encoding == "index" and classes.num_classes <= camvid.num_classes + 1:
            classes, note = camvid, "no classes.json: CamVid's 11 classes + void (label 11) assumed"
        else:
            note = f"inferred from the masks ({classes.num_classes} classes)"
    (out / "train").mkdir(parents=True)
    (out / "trainannot").mkdir(parents=True)
    for i in range(pairs):
        pair = train_pairs[i % len(train_pairs)]
        stem = f"{i:05d}_{pair.image.stem}"
        _link_or_copy(pair.image, out / "train" / f"{stem}{pair.image.suffix}")
        _link_or_copy(pair.mask, out / "trainannot" / f"{stem}{pair.mask.suffix}")
    classes.save(out / "classes.json")
    return BenchData(out, str(source), pairs, note)


def write_big_image(path: str | Path, size: int, seed: int = 0) -> Path:
    """A size x size RGB PNG of colour gradients and noise (compresses like a photo, not like pure noise)."""
    import numpy as np

    from segcli.data import write_image

    rng = np.random.default_rng(seed)
    patch = 509  # a prime-sized noise patch tiled over the image: no obvious repeat at tile sizes
    noise = rng.integers(-16, 17, (patch, patch, 3), dtype=np.int16)
    ramp = np.linspace(40, 200, size).astype(np.int16)
    image = np.empty((size, size, 3), np.uint8)
    for y0 in range(0, size, patch):  # row bands keep the int16 temporaries small
        y1 = min(size, y0 + patch)
        reps = -(-size // patch)
        band = np.tile(noise[: y1 - y0], (1, reps, 1))[:, :size]
        band = band + np.stack([ramp[None, :].repeat(y1 - y0, 0), ramp[y0:y1, None].repeat(size, 1),
                                (255 - ramp)[None, :].repeat(y1 - y0, 0)], axis=-1)
        image[y0:y1] = np.clip(band, 0, 255)
    write_image(path, image)
    return Path(path)


def precision_data(data, settings: BenchSettings, workdir: str | Path, void_as_class: bool):
    """(images uint8 (N, H, W, 3), labels uint8 (N, H, W), classes as trained, data source): up to
    `precision_images` training pairs (prepare_data's choice of dataset), the short side resized to the crop's,
    centre-cropped to `precision_size`."""
    import numpy as np

    from segcli.data import make_pipeline, open_dataset

    wanted = min(settings.precision_images, settings.precision_steps * (settings.precision_batch or 8))
    bench_data = prepare_data(data, max(1, wanted), Path(workdir) / "precision", settings.synthetic_size)
    dataset = open_dataset(bench_data.root, val_fraction=0.0)
    h, w = settings.precision_size
    ds = make_pipeline(dataset.splits["train"], dataset.classes, dataset.encoding, batch_size=8, training=False,
                       crop=(h, w), eval_short_side=min(h, w), cache=False, void_as_class=void_as_class)
    images, labels = [], []
    for x, y in ds:  # uint8 batch by batch: 360 CamVid crops take 53 MB, not 4x that
        images.append(np.clip(np.rint(np.asarray(x)), 0, 255).astype(np.uint8))
        labels.append(np.asarray(y))
    labels = np.concatenate(labels)
    classes = dataset.classes.with_void_as_class() if void_as_class else dataset.classes
    return (np.concatenate(images), labels.astype(np.uint8 if labels.max() < 256 else np.int32), classes,
            bench_data.source)
