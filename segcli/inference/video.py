"""`predict_videos`: video files, cameras and streams in, an overlay video (and masks per frame) out.

Frames flow: a reader thread (segcli.inference.capture.FrameReader) -> a queue of at most `queue_size` frames ->
batched inference (segcli.inference.arrays.iter_predictions: the model options of image predict, TTA and tiles
included) -> the writer (`VideoOutput`), so memory stays flat for any length.

Outputs, in `out_dir` as predict names them (`<stem>` is the file's stem, `camera0`, or a URL's last part):
- `<stem>_overlay.mp4`: each frame with its mask blended in (no legend: it would change the frame's size), at
  the source's frame size and rate (UNKNOWN_FPS when the source does not say). Codec: MPEG-4 Part 2 (`mp4v`) in
  an .mp4, the codec OpenCV's pip wheels (opencv-python-headless) encode: they carry no H.264 encoder. VLC,
  mpv, ffmpeg, QuickTime and Windows' players play it; web browsers do not (convert with ffmpeg for the web).
- with `masks`: `<stem>/000001.png`, ... a palette PNG per frame (numbered from 1), in the model's colours.
A live source (a camera, a stream) faster than the model waits while the queue is full: its frames are dropped
or delayed on its side, and the video, written at the source's rate, holds the frames that were predicted.
Each is written under a temporary name beside it and renamed at the end, also after Ctrl-C (the first Ctrl-C
stops reading, the frames read so far are predicted and the video is closed, playable; a second one stops at
once, still closing the video) and after a source that ends early; any other error removes them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from segcli.data import ClassMap, write_mask_png
from segcli.errors import SegcliError
from segcli.files import (check_writable_dir, ensure_writable_dir, exists_or_link, guard_output, move_aside,
                          new_temp_dir, new_temp_file, no_space_errors, remove_dead_writers_temp_files)
from segcli.inference import capture
from segcli.inference.arrays import iter_predictions
from segcli.inference.capture import COUNT_SLACK, UNKNOWN_FPS, FrameReader, VideoSource
from segcli.inference.tta import TTA, parse_tta
from segcli.inference.writers import record_outputs, written_by_predict
from segcli.overlay import blend
from segcli.progress import NullProgress, Progress

CODEC = "mp4v"
VIDEO_SUFFIX = "_overlay.mp4"


@dataclass
class VideoPrediction:
    """What one source gave: the overlay video, the masks folder (None: not asked for), the frames written, the
    video's frame rate and size, and the wall time from the first frame read to the last written."""
    source: str
    video: Path
    masks: Path | None
    frames: int
    fps: float
    width: int
    height: int
    seconds: float

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class VideoInterrupted(SegcliError):
    """Ctrl-C: the videos so far are closed and in place (`results`, the last one cut short)."""

    exit_code = 130

    def __init__(self, results: list[VideoPrediction]):
        self.results = results
        last = results[-1] if results else None
        super().__init__(f"interrupted; the first {last.frames} frames are in {last.video}" if last and last.frames
                         else "interrupted before any frame was predicted")


def video_sources(inputs, source: str | None = None) -> list[str] | None:
    """predict's inputs as video sources: the video files and stream URLs among `inputs` (capture.is_video_input)
    and `source` (a device index or URL); None when there are none (the inputs are images). SegcliError when
    videos and images are mixed."""
    inputs = [str(i) for i in inputs]
    videos = [i for i in inputs if capture.is_video_input(i)] + ([str(source)] if source is not None else [])
    if not videos:
        return None
    if len(videos) != len(inputs) + (source is not None):
        image = next(i for i in inputs if not capture.is_video_input(i))
        raise SegcliError("videos and images go to separate runs of segcli predict", image)
    return videos


def video_output_names(stem: str, *, masks: bool = False) -> list[str]:
    """The names `predict_videos` writes in --out for a source of this stem (the masks: a folder)."""
    return [stem + VIDEO_SUFFIX] + ([stem] if masks else [])


def check_video_out(sources: list[VideoSource], out_dir: str | Path, *, masks: bool = False) -> Path:
    """Before the model loads: `out_dir` may not be the folder of an input video, an output may not replace an
    input or a file that segcli predict did not write, two sources may not share an output name, and `out_dir`
    must be able to take files. Creates nothing."""
    out_dir = Path(out_dir)
    files = [Path(s.target) for s in sources if s.kind == "file"]
    for path in files:
        if os.path.realpath(out_dir) == os.path.realpath(path.parent):
            raise SegcliError(f"--out is the folder of the input video {path.name}: the outputs would be written "
                              "among the inputs; choose another --out", out_dir)
    ours, by_name = written_by_predict(out_dir), {}
    for source in sources:
        for name in video_output_names(source.stem, masks=masks):
            if name in by_name:
                raise capture.source_error(source.name, f"same output name as {by_name[name]} ({name}): predict "
                                           "them separately")
            by_name[name] = source.name
            guard_output(out_dir / name, files)  # not an input, through links too
            if name not in ours and exists_or_link(out_dir / name):
                raise SegcliError(f"{name} exists in --out and segcli predict did not write it; choose another "
                                  "--out", out_dir)
    guard_output(out_dir, files)
    return check_writable_dir(out_dir)


class VideoOutput:
    """One source's outputs in `out_dir`, opened at the first frame (its size sets the video's): the overlay
    video and, with `masks`, the masks folder, each under a temporary name until `finish` renames them (or
    `discard` removes them)."""

    def __init__(self, out_dir: Path, stem: str, fps: float, classes: ClassMap, *, masks: bool, alpha: float):
        self.out_dir, self.fps, self.classes, self.alpha = Path(out_dir), fps, classes, alpha
        self.video = self.out_dir / (stem + VIDEO_SUFFIX)
        self.masks = self.out_dir / stem if masks else None
        self.palette = classes.palette()
        self.frames, self.size = 0, None
        self._writer = self._tmp_video = self._tmp_masks = None

    def _open(self, height: int, width: int) -> None:
        ensure_writable_dir(self.out_dir)
        record_outputs(self.out_dir, video_output_names(self.video.name[:-len(VIDEO_SUFFIX)],
                                                        masks=self.masks is not None))
        with no_space_errors(self.video):
            self._tmp_video = new_temp_file(self.video)  # keeps .mp4: OpenCV picks the container by it
            if self.masks is not None:
                self._tmp_masks = new_temp_dir(self.masks)
        self._writer = capture.quietly(lambda: cv2.VideoWriter(str(self._tmp_video), cv2.VideoWriter_fourcc(*CODEC),
                                                                self.fps, (width, height)))
        if not self._writer.isOpened():
            raise SegcliError(f"OpenCV cannot write an {CODEC} video here", self.video)
        self.size = (height, width)

    def write(self, frame: np.ndarray, labels: np.ndarray) -> None:
        """Add one (H, W, 3) RGB frame with its (H, W) labels."""
        if self._writer is None:
            self._open(*frame.shape[:2])
        if frame.shape[:2] != self.size:
            raise SegcliError(f"frame {self.frames + 1} is {frame.shape[1]}x{frame.shape[0]} but the video began "
                              f"at {self.size[1]}x{self.size[0]}: a video keeps one size", self.video)
        self._writer.write(cv2.cvtColor(blend(frame, labels, self.classes, self.alpha), cv2.COLOR_RGB2BGR))
        self.frames += 1
        if self._tmp_masks is not None:
            write_mask_png(self._tmp_masks / f"{self.frames:06d}.png", labels, self.palette)

    def finish(self) -> None:
        """Close the video and move the outputs into place (an earlier predict's masks folder is replaced)."""
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        os.replace(self._tmp_video, self.video)
        if self._tmp_masks is not None:
            old = move_aside(self.masks) if exists_or_link(self.masks) else None
            os.rename(self._tmp_masks, self.masks)
            if old is not None:
                shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()

    def discard(self) -> None:
        """Remove what is still under a temporary name (an error stopped the run)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._tmp_video is not None and self._tmp_video.exists():
            self._tmp_video.unlink()
        if self._tmp_masks is not None and self._tmp_masks.is_dir():
            shutil.rmtree(self._tmp_masks)


@contextlib.contextmanager
def _first_ctrl_c_stops(stop: threading.Event):
    """While predicting: the first Ctrl-C sets `stop` (the frames read so far are finished), a second raises
    KeyboardInterrupt at once. Only the main thread may set signal handlers; elsewhere Ctrl-C is as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_ctrl_c(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _rate(done: int, total: int | None, seconds: float) -> str:
    """"8.1 frames/s", with ", 0:42 left" when the frame count is known."""
    rate = done / seconds if seconds > 0 else 0.0
    text = f"{rate:.1f} frames/s"
    if total and rate > 0 and total > done:
        left = int(round((total - done) / rate))
        text += f", {left // 60}:{left % 60:02d} left"
    return text


def _predict_source(model, source: VideoSource, out_dir: Path, *, masks: bool, alpha: float, tile: int,
                    overlap: int, batch_size: int, tta: TTA | None, queue_size: int, progress: Progress,
                    stop: threading.Event) -> tuple[VideoPrediction, FrameReader]:
    """Predict every frame of one source; returns its result and its reader (why it ended)."""
    fps = source.fps or UNKNOWN_FPS
    if source.fps is None:
        progress.note(f"{source.name} does not say its frame rate: the video is written at {fps:g} frames/s")
    out = VideoOutput(out_dir, source.stem, fps, model.classes, masks=masks, alpha=alpha)
    reader = FrameReader(source, queue_size, stop)
    task, total = f"predict {source.stem}", source.frame_count
    progress.start(task, total)
    began = time.perf_counter()
    try:
        try:
            for _, frame, labels, _ in iter_predictions(model.model, reader, stride=model.output_stride, tile=tile,
                                                        overlap=overlap, batch_size=batch_size, tta=tta):
                out.write(frame, labels)
                progress.advance(task, out.frames, info=_rate(out.frames, total, time.perf_counter() - began))
        except KeyboardInterrupt:  # a second Ctrl-C: the frames written so far are kept
            stop.set()
        seconds = time.perf_counter() - began
        try:
            reader.close()  # waits a few seconds at most for a stalled stream's read
        except KeyboardInterrupt:  # one more Ctrl-C: stop waiting (the reader is a daemon thread); keep the video
            stop.set()
        out.finish()
    except BaseException:
        reader.close()
        out.discard()
        raise
    finally:
        progress.end(task)
    height, width = out.size or (0, 0)
    return VideoPrediction(source.name, out.video, out.masks if out.frames else None, out.frames, fps, width,
                           height, seconds), reader


def _ended_early(source: VideoSource, reader: FrameReader, result: VideoPrediction) -> str | None:
    """Why a source that was not stopped ended too soon, or None: a read that failed, a camera that stopped
    (cameras do not end), a file or stream that ended short of its header's frame count (more than
    COUNT_SLACK frames or 1%), a source without frames."""
    if reader.failure:
        return f"reading frame {reader.frames_read + 1} failed ({reader.failure})"
    if not reader.ended:
        return None
    if reader.frames_read == 0:
        return "opened, but gave no frames"
    if source.kind == "camera":
        return f"the camera stopped giving frames after {reader.frames_read}"
    count = source.frame_count
    if count and count - reader.frames_read > max(COUNT_SLACK, count // 100):
        return f"ended after {reader.frames_read} of its {count} frames (truncated or damaged?)"
    return None


def predict_videos(model, sources, out_dir: str | Path = "predictions", *, precision: str | None = "auto",
                   masks: bool = False, alpha: float = 0.5, tile: int = 1024, overlap: int = 128,
                   batch_size: int = 4, tta: str | TTA | None = None, queue_size: int = 16,
                   progress: Progress | None = None, engine: str | None = None) -> list[VideoPrediction]:
    """Predict every frame of each source and write its overlay video (and masks) into `out_dir` (see the module).

    `sources`: video files, stream URLs (rtsp://, http://, ...) and camera device indices ("0"), each opened by
    OpenCV. Checked first, before the model loads: `tta`, `alpha`, `batch_size`, every source opened
    (`capture.open_sources`: one line naming a source OpenCV cannot open) and `out_dir` (`check_video_out`).
    `model`: a .keras file or an export, loaded at `precision` by segcli.inference.engines.load_predictor (with
    `engine`, where a file has a choice) once the checks have passed; or a segcli.modelfile.LoadedModel.
    Frames are batched by `batch_size` (equal-size frames per model call); at most `queue_size` decoded frames
    wait for the model. `progress` gets a task "predict STEM" per source (its total the frame count where the
    source knows it), advanced per frame with the frames/s and, where the count is known, the time left.

    Raises VideoInterrupted (exit 130) after Ctrl-C, and SegcliError naming the source for one that ends early
    (see `_ended_early`); in both cases the frames predicted are in place, in a playable video.
    """
    tta = parse_tta(tta)
    if not 0.0 <= alpha <= 1.0:
        raise SegcliError(f"alpha must be in 0..1, got {alpha}")
    if batch_size < 1 or queue_size < 1:
        raise SegcliError(f"batch size and queue size must be >= 1, got {batch_size} and {queue_size}")
    if isinstance(sources, (str, int, Path)):
        sources = [sources]
    if not sources:
        raise SegcliError("no video given")
    opened = capture.open_sources(sources)
    results: list[VideoPrediction] = []
    handed = 0  # sources handed to a reader
    try:
        out_dir = check_video_out(opened, out_dir, masks=masks)
        if isinstance(model, (str, os.PathLike)):
            from segcli.inference.engines import load_predictor  # Keras or an engine: only now, after the checks

            model = load_predictor(model, precision, engine)
        remove_dead_writers_temp_files(out_dir, folders=True)  # what a killed predict left
        progress = progress or NullProgress()
        stop = threading.Event()
        with _first_ctrl_c_stops(stop):
            for source in opened:
                handed += 1
                result, reader = _predict_source(model, source, out_dir, masks=masks, alpha=alpha, tile=tile,
                                                 overlap=overlap, batch_size=batch_size, tta=tta,
                                                 queue_size=queue_size, progress=progress, stop=stop)
                results.append(result)
                if stop.is_set() or reader.interrupted:
                    raise VideoInterrupted(results)
                problem = _ended_early(source, reader, result)
                if problem:
                    kept = f"; its {result.frames} frames are in {result.video}" if result.frames else ""
                    raise capture.source_error(source.name, problem + kept)
    finally:  # a reader releases its own source (the read of a stalled stream may still run): the rest here
        for source in opened[handed:]:
            source.capture.release()
    return results


__all__ = ["predict_videos", "video_sources", "check_video_out", "video_output_names", "VideoPrediction",
           "VideoInterrupted", "VideoOutput", "CODEC", "VIDEO_SUFFIX"]
