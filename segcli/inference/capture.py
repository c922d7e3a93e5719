"""Where predict's video frames come from: a video file, a camera (a device index) or a stream URL, opened with
OpenCV (`open_source`), then read on a thread of their own into a bounded queue (`FrameReader`), so a video of
any length holds at most the queue's frames in memory.

`new_capture` is the one place a cv2.VideoCapture is made (tests replace it with a fake capture)."""

from __future__ import annotations

import math
import os
import queue
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import urlparse

import cv2
import numpy as np

from segcli.errors import DataError, SegcliError, describe

# What predict takes for a video: a file with one of these extensions, or a URL with one of these schemes
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".ts")
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp")
UNKNOWN_FPS = 25.0  # the frame rate written when a source does not say its own (some cameras and streams)
# A file that ends more than this many frames (or 1%) before the count in its header "ended early"; containers
# without a frame count in their header get one estimated from their duration, which may be a frame off
COUNT_SLACK = 1


def is_url(text: str) -> bool:
    return urlparse(str(text)).scheme.lower() in STREAM_SCHEMES and "://" in str(text)


def is_video_input(text: str | Path) -> bool:
    """Whether a predict input is a video: a stream URL, or a name with a video extension."""
    return is_url(str(text)) or Path(str(text)).suffix.lower() in VIDEO_EXTS


def source_error(name: str, problem: str) -> SegcliError:
    """The one-line error about a source, "NAME: problem" (a URL kept as written: a path would fold its //)."""
    return SegcliError(f"{name}: {problem}")


@dataclass
class VideoSource:
    """An opened source. `kind`: "file", "camera" or "stream"; `name`: how messages name it (the path, "camera
    0", the URL); `stem`: the name its outputs get; `fps`: its own frame rate (None: it does not say);
    `frame_count`: the frames its header announces (None: a camera, a live stream, or a header without one)."""
    target: str | int
    kind: str
    name: str
    stem: str
    capture: object
    fps: float | None
    frame_count: int | None


def new_capture(target: str | int):
    """A cv2.VideoCapture of `target` (a path, URL or device index)."""
    return cv2.VideoCapture(target)


def _stream_stem(url: str) -> str:
    """A file name for a URL's outputs: the last part of its path without extension (`rtsp://cam/live/front` ->
    `front`), made of safe characters; "stream" when it has none."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(urlparse(url).path).stem).strip("._")
    return stem or "stream"


def describe_source(spec: str | int | Path) -> tuple[str | int, str, str, str]:
    """(what OpenCV opens, kind, name, stem) of a --source or video input: a device index ("0"), a URL, a file.
    DataError for a file that does not exist."""
    text = str(spec).strip()
    if text.isdigit():
        return int(text), "camera", f"camera {int(text)}", f"camera{int(text)}"
    if is_url(text):
        return text, "stream", text, _stream_stem(text)
    path = Path(os.path.expanduser(text))
    if not path.is_file():
        raise DataError("no such file" if not path.exists() else "not a video file", path)
    return str(path), "file", str(path), path.stem


def quietly(make):
    """make() with OpenCV's and FFmpeg's own log lines off the terminal (segcli reports a failure in one line):
    FFmpeg's through OPENCV_FFMPEG_LOGLEVEL (-8: quiet; a value the user set stays), OpenCV's log level for the
    call."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        return make()
    finally:
        cv2.utils.logging.setLogLevel(level)


def open_source(spec: str | int | Path) -> VideoSource:
    """Open a video file, a camera (device index) or a stream URL; one-line SegcliError naming it when OpenCV
    cannot open it."""
    target, kind, name, stem = describe_source(spec)
    capture = quietly(lambda: new_capture(target))
    if not capture.isOpened():
        capture.release()
        what = {"camera": "no camera at this device index, or it is busy",
                "stream": "cannot open this stream (unreachable, refused, or not a video)",
                "file": "cannot open this video (damaged, or a format OpenCV's FFmpeg cannot read)"}[kind]
        raise source_error(name, what)
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = float(fps) if math.isfinite(fps) and 0 < fps <= 1000 else None
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    count = int(count) if kind != "camera" and math.isfinite(count) and count > 0 else None
    return VideoSource(target, kind, name, stem, capture, fps, count)


def open_sources(specs: Iterable[str | int | Path]) -> list[VideoSource]:
    """Open every source (before the model loads, so a bad one fails first); those opened are released when a
    later one fails."""
    opened: list[VideoSource] = []
    try:
        for spec in specs:
            opened.append(open_source(spec))
    except BaseException:
        for source in opened:
            source.capture.release()
        raise
    return opened


_END = object()


class FrameReader:
    """Reads a source's frames on a thread of its own into a queue of at most `depth` frames; iterating it yields
    (frame number from 1, (H, W, 3) uint8 RGB frame) until the source ends or `stop` is set.

    After the iteration: `frames_read`, `ended` (True: the source said it has no more frames; False: stopped),
    `failure` (a read that raised, in one line) and `interrupted` (a KeyboardInterrupt on the reading thread: the
    frames read before it are yielded, then the iteration ends). The thread releases the capture when it ends."""

    def __init__(self, source: VideoSource, depth: int, stop: threading.Event | None = None):
        self.source = source
        self.stop = stop or threading.Event()  # set by the caller (Ctrl-C): the iteration ends
        self._halt = threading.Event()  # set by close: the thread ends
        self.frames_read = 0
        self.ended = False
        self.failure: str | None = None
        self.interrupted = False
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._thread = threading.Thread(target=self._read, name=f"segcli-read-{source.stem}", daemon=True)

    def _stopping(self) -> bool:
        return self.stop.is_set() or self._halt.is_set()

    def _put(self, item) -> bool:
        while not self._stopping():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _read(self) -> None:
        capture = self.source.capture
        try:
            while not self._stopping():
                ok, frame = capture.read()
                if not ok or frame is None:
                    self.ended = True
                    break
                if frame.ndim == 2:
                    frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
                else:
                    frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB if frame.shape[2] == 4 else cv2.COLOR_BGR2RGB)
                self.frames_read += 1
                if not self._put((self.frames_read, frame)):
                    break
        except KeyboardInterrupt:  # the frames read before it are still predicted, then the caller stops
            self.interrupted = True
        except Exception as exc:  # a decoder's error: the source ends here, and the caller reports it
            self.failure = describe(exc)
        finally:
            try:
                capture.release()
            finally:
                self._put(_END)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        if not self._thread.is_alive() and self._thread.ident is None:
            self._thread.start()
        while not self._stopping():
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    return
                continue
            if item is _END:
                return
            yield item

    def close(self, timeout: float = 5.0) -> None:
        """Stop reading and wait (up to `timeout` s: a stalled stream's read may not return) for the thread."""
        self._halt.set()
        if self._thread.ident is None:
            self.source.capture.release()
            return
        while True:  # what is queued goes, so a thread waiting to put sees the stop
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout)


__all__ = ["VIDEO_EXTS", "STREAM_SCHEMES", "UNKNOWN_FPS", "COUNT_SLACK", "VideoSource", "FrameReader", "new_capture",
           "open_source", "open_sources", "describe_source", "is_video_input", "is_url", "quietly",
           "source_error"]
