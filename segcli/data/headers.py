"""What an image file's header says, nothing decoded: its size (PNG, JPEG, GIF, BMP, WebP, TIFF), and the bound on
the pixels segcli decodes for a dataset, so that a decompression bomb is refused from a few bytes."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from segcli.errors import DataError, SegcliError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The most pixels an image or mask of a dataset may hold (data check, and so train, refuse more from the file's
# header, before decoding it), like PIL's decompression-bomb limit (89 M pixels): 2**26 = 67 M pixels, 8192x8192
# or a 48-megapixel photo. Decoding one that large as an RGB mask and looking up its colours peaks near 1.5 GB,
# so `data check` stays under 2 GB whatever the files hold; SEGCLI_MAX_PIXELS sets another bound. Masks are
# bounded wherever they are read (read_label_png); images in data check, and so in train, which checks its data
# first. predict reads images of any size (it predicts in tiles) and takes no bound.
MAX_PIXELS = 1 << 26
MAX_PIXELS_ENV = "SEGCLI_MAX_PIXELS"


def max_pixels() -> int:
    """The bound on an image's or mask's pixels in a dataset: SEGCLI_MAX_PIXELS when set, else MAX_PIXELS."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return MAX_PIXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise SegcliError(f"{MAX_PIXELS_ENV} must be a positive whole number of pixels, got {text!r}")
    return value


def _tiff_size(f, head: bytes) -> tuple[int, int] | None:
    order = "<" if head[:2] == b"II" else ">"
    f.seek(struct.unpack(order + "I", head[4:8])[0])
    count = struct.unpack(order + "H", f.read(2))[0]
    found = {}
    for _ in range(min(count, 4096)):
        entry = f.read(12)
        if len(entry) < 12:
            break
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):
            found[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), entry[8:10 if kind == 3 else 12])[0]
    return (found[257], found[256]) if len(found) == 2 else None


def _jpeg_size(f) -> tuple[int, int] | None:
    f.seek(2)
    while True:
        marker = f.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        while marker[1] == 0xFF:  # fill bytes
            marker = marker[1:] + f.read(1)
        code = marker[1]
        if code in (0x01, *range(0xD0, 0xD8)):  # no length
            continue
        length = struct.unpack(">H", f.read(2))[0]
        if 0xC0 <= code <= 0xCF and code not in (0xC4, 0xC8, 0xCC):  # a start of frame
            height, width = struct.unpack(">xHH", f.read(5))
            return height, width
        if code in (0xD9, 0xDA) or length < 2:
            return None
        f.seek(length - 2, os.SEEK_CUR)


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(height, width) from the file's header, nothing decoded: PNG, JPEG, GIF, BMP, WebP and TIFF; None for a
    file whose header this does not read (cv2 then finds out)."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
            if head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR":
                width, height = struct.unpack(">II", head[16:24])
                return height, width
            if head[:3] == b"\xff\xd8\xff":
                return _jpeg_size(f)
            if head[:3] == b"GIF" and len(head) >= 10:
                width, height = struct.unpack("<HH", head[6:10])
                return height, width
            if head[:2] == b"BM" and len(head) >= 26:
                width, height = struct.unpack("<ii", head[18:26])
                return abs(height), abs(width)
            if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
                kind = head[12:16]
                if kind == b"VP8X":
                    return (int.from_bytes(head[27:30], "little") + 1, int.from_bytes(head[24:27], "little") + 1)
                if kind == b"VP8L":
                    bits = int.from_bytes(head[21:25], "little")
                    return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
                if kind == b"VP8 ":
                    width, height = struct.unpack("<HH", head[26:30])
                    return height & 0x3FFF, width & 0x3FFF
            if head[:4] in (b"II*\x00", b"MM\x00*"):
                return _tiff_size(f, head)
    except (OSError, struct.error):
        return None
    return None


def check_pixels(path: str | Path, limit: int | None = None) -> None:
    """DataError naming the file and its size when its header declares more pixels than `limit` (max_pixels())."""
    limit = max_pixels() if limit is None else limit
    size = image_size(path)
    if size is not None and size[0] * size[1] > limit:
        raise DataError(f"{size[0]}x{size[1]} pixels ({size[0] * size[1]:,}) is more than the {limit:,} segcli "
                        f"decodes ({MAX_PIXELS_ENV} sets another bound)", path)
