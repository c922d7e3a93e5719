"""Reading and writing images and label PNGs (cv2 for pixels, a tiny PNG chunk codec for palette masks)."""

from __future__ import annotations

import os
import struct
import sys
import tempfile
import threading
import zlib
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from segcli.data.headers import PNG_SIGNATURE, check_pixels
from segcli.errors import DataError
from segcli.files import atomic_path

# The image files segcli reads (datasets, predict inputs) and writes (overlay --out), in the order messages list them.
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
_CORRUPT = "cannot read image: corrupt, truncated or not an image"
_QUIET = threading.Lock()  # held while OpenCV's log level is lowered (one global setting, shared by threads)
_BITS = (8, 10, 12, 14, 16)  # value ranges a 16-bit image may hold (camera data is often 10, 12 or 14 bit)
_LIBRARY_LINES = (b"libpng ", b"Corrupt JPEG data", b"Premature end of JPEG file", b"Invalid SOS parameters",
                  b"Bogus ", b"TIFFRead", b"TIFFFetch")  # what the image libraries print on fd 2 themselves


def _exists(path: Path) -> None:
    if not path.is_file():
        raise DataError("no such file", path)


_STDERR = threading.Lock()
_stderr_users = 0
_stderr_real: int | None = None  # the real fd 2 while fd 2 points at the capture file
_capture = None  # one capture file per process, emptied after each use (not a new file per decode)


@contextmanager
def _library_lines_kept_off():
    """While cv2 decodes, fd 2 goes to a capture file: libpng and libjpeg print their own lines there ("libpng
    error: Not enough image data"), and segcli reports the file in its own line. When the last decoding thread is
    done, fd 2 is put back and whatever else was written meanwhile (another thread's lines) is written to it."""
    global _stderr_users, _stderr_real, _capture
    with _STDERR:
        if _stderr_users == 0:
            try:
                sys.stderr.flush()
                if _capture is None:
                    _capture = tempfile.TemporaryFile()
                _stderr_real = os.dup(2)
                os.dup2(_capture.fileno(), 2)
            except (OSError, ValueError, AttributeError):
                _stderr_real = None
        _stderr_users += 1
    try:
        yield
    finally:
        with _STDERR:
            _stderr_users -= 1
            if _stderr_users == 0 and _stderr_real is not None:
                real, _stderr_real = _stderr_real, None
                try:
                    sys.stderr.flush()
                except (OSError, ValueError, AttributeError):
                    pass
                os.dup2(real, 2)
                os.close(real)
                fd = _capture.fileno()
                size = os.lseek(fd, 0, os.SEEK_END)
                if size:
                    written = os.pread(fd, size, 0)
                    os.ftruncate(fd, 0)
                    os.lseek(fd, 0, os.SEEK_SET)  # the offset fd 2 shared: the next capture starts at 0 again
                    kept = b"".join(line for line in written.splitlines(keepends=True)
                                    if not line.startswith(_LIBRARY_LINES))
                    if kept:
                        os.write(2, kept)


def _imread(path: Path, flags: int):
    """cv2.imread with the image libraries' own lines kept off the terminal."""
    with _library_lines_kept_off():
        return cv2.imread(str(path), flags)


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB, pixels as stored (see read_image_noted)."""
    return read_image_noted(path)[0]


def read_image_noted(path: str | Path) -> tuple[np.ndarray, str | None]:
    """(H, W, 3) uint8 RGB and how it was converted (None for 8-bit images).

    Pixels are used as stored: an EXIF orientation is ignored, as for masks (read_label_png) and as
    annotation tools label them. 16-bit images are scaled by their value range (12-bit data in a 16-bit
    file is read as 0..4095, not 0..65535); float images must hold 0..1 and are scaled to 0..255.
    """
    path = Path(path)
    _exists(path)
    raw = _imread(path, cv2.IMREAD_UNCHANGED)  # UNCHANGED: native depth, EXIF orientation ignored
    if raw is None:
        raise DataError(_CORRUPT, path)
    if raw.ndim == 3 and raw.shape[2] < 3:  # grey (+ alpha)
        raw = raw[..., 0]
    if raw.ndim == 2:
        rgb = np.repeat(raw[..., None], 3, axis=2)
    elif raw.dtype == np.uint8:
        return cv2.cvtColor(raw[..., :3], cv2.COLOR_BGR2RGB), None  # alpha dropped
    else:
        rgb = np.ascontiguousarray(raw[..., 2::-1])
    if rgb.dtype == np.uint8:
        return rgb, None
    if rgb.dtype == np.uint16:
        top = int(rgb.max())
        bits = next(b for b in _BITS if top < 1 << b)
        if bits == 8:
            return rgb.astype(np.uint8), "16-bit, values within 0..255: read as 8-bit"
        scaled = np.rint(rgb.astype(np.float32) * (255.0 / ((1 << bits) - 1)))
        return scaled.astype(np.uint8), f"16-bit, values within 0..{(1 << bits) - 1}: read as {bits}-bit"
    if rgb.dtype in (np.float32, np.float64):
        if not np.isfinite(rgb).all():
            raise DataError("float image with NaN or infinite values: unsupported; save it as 8- or 16-bit", path)
        lo, hi = float(rgb.min()), float(rgb.max())
        if lo < 0.0 or hi > 1.0 + 1e-6:
            raise DataError(f"float image with values {lo:g}..{hi:g}: only floats in 0..1 are supported; "
                            "save it as 8- or 16-bit", path)
        return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8), "float, values 0..1 scaled to 0..255"
    raise DataError(f"unsupported pixel type ({rgb.dtype}): save it as 8- or 16-bit unsigned", path)


def _tiff_orientation(tiff: bytes) -> int:
    """The Orientation tag (0x0112) of a TIFF structure's first IFD (an EXIF block or a TIFF file); 1 if none."""
    if tiff[:4] not in (b"II*\x00", b"MM\x00*"):
        return 1
    order = "<" if tiff[:2] == b"II" else ">"
    ifd = struct.unpack(order + "I", tiff[4:8])[0]
    if ifd + 2 > len(tiff):
        return 1
    for i in range(struct.unpack(order + "H", tiff[ifd:ifd + 2])[0]):
        entry = tiff[ifd + 2 + 12 * i: ifd + 14 + 12 * i]
        if len(entry) < 12:
            break
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag == 0x0112 and kind == 3:  # SHORT
            value = struct.unpack(order + "H", entry[8:10])[0]
            return value if 1 <= value <= 8 else 1
    return 1


def exif_orientation(path: str | Path) -> int:
    """The EXIF orientation (1..8, 1 = as stored) of a JPEG, PNG or TIFF file; 1 when there is none.

    segcli ignores it (see read_image_noted); `data check` names the files that carry one.
    """
    with open(path, "rb") as f:
        head = f.read(1 << 18)
    if head[:2] == b"\xff\xd8":  # JPEG: walk the marker segments up to the scan, looking for APP1 "Exif"
        pos = 2
        while pos + 4 <= len(head) and head[pos] == 0xFF:
            marker, length = head[pos + 1], struct.unpack(">H", head[pos + 2:pos + 4])[0]
            if marker in (0xD9, 0xDA):
                break
            if marker == 0xE1 and head[pos + 4:pos + 10] == b"Exif\x00\x00":
                return _tiff_orientation(head[pos + 10:pos + 2 + length])
            pos += 2 + length
        return 1
    if head[:8] == PNG_SIGNATURE:  # PNG: an eXIf chunk before the image data
        pos = 8
        while pos + 8 <= len(head):
            length, ctype = struct.unpack(">I4s", head[pos:pos + 8])
            if ctype == b"eXIf":
                return _tiff_orientation(head[pos + 8:pos + 8 + length])
            if ctype in (b"IDAT", b"IEND"):
                break
            pos += 12 + length
        return 1
    return _tiff_orientation(head)


def frames(path: str | Path) -> tuple[str, int] | None:
    """("animated GIF" | "multi-page TIFF", N) for a file holding N > 1 frames, of which the readers (read_image,
    read_label_png: cv2.imread) use frame 1; None for one frame, another format or an unreadable file."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return None
    kind = ("animated GIF" if head[:3] == b"GIF" else "multi-page TIFF" if head in (b"II*\x00", b"MM\x00*")
            else None)
    if kind is None:
        return None
    with _QUIET:  # OpenCV logs its own "[ERROR...] imcount_" line for a damaged file: it is ours to report
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        try:
            count = int(cv2.imcount(str(path)))
        except cv2.error:
            count = 0
        finally:
            cv2.utils.logging.setLogLevel(level)
    return (kind, count) if count > 1 else None


ORIENTATIONS = {2: "mirrored", 3: "rotated 180°", 4: "flipped upside down", 5: "transposed",
                6: "rotated 90° clockwise", 7: "transversed", 8: "rotated 90° counter-clockwise"}


def is_jpeg(path: str | Path) -> bool:
    """Whether the file is a JPEG (by its first bytes, whatever its extension)."""
    with open(path, "rb") as f:
        return f.read(3) == b"\xff\xd8\xff"


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image (format from the extension) atomically."""
    rgb = np.asarray(rgb)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    try:  # encoded here and written by segcli.files: a full disk is one line naming the file, not libpng's
        ok, data = cv2.imencode(Path(path).suffix or ".png", bgr)
    except cv2.error:
        ok = False
    if not ok:
        raise DataError("cannot write image (unsupported extension?)", path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.tobytes())


# --- PNG chunks -----------------------------------------------------------------------------

def _png_chunks(data: bytes) -> dict[bytes, list[bytes]]:
    chunks: dict[bytes, list[bytes]] = {}
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        chunks.setdefault(ctype, []).append(data[pos + 8:pos + 8 + length])
        pos += 12 + length
        if ctype == b"IEND":
            break
    return chunks


def png_color_type(path: str | Path) -> int | None:
    """The IHDR colour type of a PNG (0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA); None if not a PNG."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return head[25]


def read_png_palette(path: str | Path) -> np.ndarray | None:
    """(N, 3) uint8 PLTE colours of a palette PNG, None when it has none."""
    path = Path(path)
    data = path.read_bytes()
    if data[:8] != PNG_SIGNATURE:
        return None
    plte = _png_chunks(data).get(b"PLTE")
    return np.frombuffer(plte[0], np.uint8).reshape(-1, 3).copy() if plte else None


def lookup_colors(rgb: np.ndarray, colors) -> np.ndarray:
    """Index into `colors` of each pixel of (H, W, 3) `rgb` (first match wins); -1 where the colour is not listed."""
    colors = np.asarray(colors, np.int64).reshape(-1, 3)
    keys = (colors[:, 0] << 16) | (colors[:, 1] << 8) | colors[:, 2]
    uniq, first = np.unique(keys, return_index=True)
    pk = rgb[..., 0].astype(np.int32) << 16  # int32 pixel keys, built a channel at a time: 4 bytes a pixel
    pk |= rgb[..., 1].astype(np.int32) << 8
    pk |= rgb[..., 2]
    pos = np.clip(np.searchsorted(uniq, pk), 0, len(uniq) - 1)
    return np.where(uniq[pos] == pk, first[pos], -1).astype(np.int32)


def _palette_indices(data: bytes) -> np.ndarray | None:
    """Decode a non-interlaced palette PNG's indices with zlib; None when it needs Average/Paeth unfiltering."""
    chunks = _png_chunks(data)
    width, height, depth, _, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"][0])
    if interlace:
        return None
    raw = np.frombuffer(zlib.decompress(b"".join(chunks.get(b"IDAT", []))), np.uint8)
    stride = (width * depth + 7) // 8
    if raw.size < height * (stride + 1):
        raise zlib.error("image data too short")
    rows = raw[: height * (stride + 1)].reshape(height, stride + 1)
    if np.isin(rows[:, 0], (3, 4)).any():
        return None
    out = np.empty((height, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for i, (kind, line) in enumerate(zip(rows[:, 0], rows[:, 1:])):
        if kind == 1:  # Sub (1 byte per pixel for palette images): a running sum
            line = np.cumsum(line, dtype=np.uint8)
        elif kind == 2:  # Up
            line = line + prev
        elif kind != 0:
            raise zlib.error(f"bad PNG filter type {kind}")
        out[i] = prev = line
    if depth < 8:
        bits = np.unpackbits(out, axis=1).reshape(height, -1, depth)
        out = (bits * (1 << np.arange(depth - 1, -1, -1, dtype=np.uint8))).sum(-1, dtype=np.uint8)
    return out[:, :width]


def read_label_png(path: str | Path) -> np.ndarray:
    """A mask as stored: palette PNGs give (H, W) uint8 palette indices; others what cv2 reads unchanged
    ((H, W) uint8/uint16, or (H, W, 3) RGB for colour masks, alpha dropped). A mask whose header declares more
    pixels than max_pixels() is a DataError."""
    path = Path(path)
    _exists(path)
    check_pixels(path)  # no command needs a mask over the bound whole: refused from its header, never decoded
    if png_color_type(path) == 3:
        return _read_palette_png(path)
    raw = _imread(path, cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DataError(_CORRUPT, path)
    if raw.ndim == 3:
        raw = cv2.cvtColor(raw[..., :3], cv2.COLOR_BGR2RGB) if raw.shape[2] >= 3 else raw[..., 0]
    return raw


def _read_palette_png(path: Path) -> np.ndarray:
    data = path.read_bytes()
    try:
        indices = _palette_indices(data)
    except (zlib.error, KeyError, struct.error, ValueError):
        raise DataError(_CORRUPT, path) from None
    if indices is not None:
        return indices
    # interlaced or Average/Paeth filtered: let cv2 expand to colours, map them back through the PLTE
    bgr = _imread(path, cv2.IMREAD_COLOR)
    plte = read_png_palette(path)
    if bgr is None or plte is None:
        raise DataError(_CORRUPT, path)
    idx = lookup_colors(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), plte)
    if (idx < 0).any():
        raise DataError(_CORRUPT, path)
    return idx.astype(np.uint8)


def _chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def write_mask_png(path: str | Path, labels: np.ndarray, palette: np.ndarray) -> None:
    """Write (H, W) labels 0..255 as an 8-bit palette ('P' mode) PNG with `palette` (N <= 256, 3), atomically."""
    labels = np.asarray(labels)
    palette = np.asarray(palette, np.uint8).reshape(-1, 3)
    if labels.ndim != 2 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty (H, W) array, got shape {labels.shape}")
    if labels.min() < 0 or labels.max() >= len(palette) or len(palette) > 256:
        raise ValueError(f"labels {labels.min()}..{labels.max()} do not fit a palette of {len(palette)} colours")
    h, w = labels.shape
    rows = np.zeros((h, w + 1), np.uint8)  # filter byte 0 (None) per row
    rows[:, 1:] = labels
    png = (PNG_SIGNATURE
           + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
           + _chunk(b"PLTE", palette.tobytes())
           + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
           + _chunk(b"IEND", b""))
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)
