"""`segcli predict` on videos, cameras and streams (segcli.inference.video and .capture): the overlay video's
frames, rate and size, masks per frame, sources that cannot be opened or end early, Ctrl-C, the bounded queue.
The videos are written here with OpenCV's writer; cameras and streams are fake captures (capture.new_capture)."""

import os
import signal

import cv2
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from segcli.data import read_label_png  # noqa: E402
from segcli.data.imageio import read_png_palette  # noqa: E402
from segcli.files import TMP_TAG  # noqa: E402
from segcli.inference import capture, predict_labels  # noqa: E402
from segcli.inference.video import VideoInterrupted, predict_videos  # noqa: E402
from segcli.modelfile import load_model  # noqa: E402
from segcli.progress import Progress  # noqa: E402
from test_predict import K, model_file  # noqa: E402,F401 (the tiny model's fixture)

H, W, FPS, N = 32, 48, 5.0, 12  # the test clip: 12 frames of 48x32 at 5 fps


def write_clip(path, frames=N, fps=FPS, fourcc="mp4v", seed=0):
    """A clip of moving shapes on a ramp; returns its path."""
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert writer.isOpened()
    for i in range(frames):
        frame = np.clip(np.linspace(0, 200, W)[None, :, None] + rng.integers(0, 40, (H, W, 3)), 0, 255).astype(np.uint8)
        cv2.circle(frame, (4 * i, H // 2), 9, (40, 220, 90), -1)
        cv2.rectangle(frame, (W - 3 * i - 10, 2), (W - 3 * i, 12), (250, 250, 250), -1)
        writer.write(frame)
    writer.release()
    return path


def decoded(path):
    """Every frame of a video as OpenCV decodes it, BGR."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def video_facts(path):
    """(frames decoded, fps, width, height) of a video file: it opens, and every frame decodes."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    fps, width, height = cap.get(cv2.CAP_PROP_FPS), int(cap.get(3)), int(cap.get(4))
    cap.release()
    return len(decoded(path)), fps, width, height


def no_temporaries(folder):
    return not [p for p in folder.rglob("*") if TMP_TAG in p.name]


class FakeCapture:
    """A cv2.VideoCapture stand-in: `frames` (BGR) then the end; KeyboardInterrupt on read number
    `interrupt_at + 1`."""

    def __init__(self, frames, fps=30.0, count=0, opened=True, interrupt_at=None):
        self.frames, self.fps, self.count, self.opened = list(frames), fps, count, opened
        self.interrupt_at, self.reads, self.released = interrupt_at, 0, False

    def isOpened(self):
        return self.opened

    def get(self, prop):
        return {cv2.CAP_PROP_FPS: self.fps, cv2.CAP_PROP_FRAME_COUNT: self.count}.get(prop, 0.0)

    def read(self):
        if self.interrupt_at is not None and self.reads == self.interrupt_at:
            raise KeyboardInterrupt
        if self.reads >= len(self.frames):
            return False, None
        self.reads += 1
        return True, self.frames[self.reads - 1].copy()

    def release(self):
        self.released = True


def fake_source(monkeypatch, fake):
    opened = []

    def make(target):
        opened.append(target)
        return fake

    monkeypatch.setattr(capture, "new_capture", make)
    return opened


@pytest.fixture(scope="module")
def loaded(model_file):
    return load_model(model_file, "float32")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clips") / "clip.mp4")


def one_error_line(result):
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_overlay_video_keeps_the_sources_frames_rate_and_size(cli, model_file, clip, tmp_path):
    out = tmp_path / "preds"
    result = cli("predict", model_file, clip, "--out", out)
    assert result.exit_code == 0, result.output
    assert video_facts(out / "clip_overlay.mp4") == (N, FPS, W, H)
    assert f"{N} frames, {W}x{H} at 5 fps" in result.stdout and "frames/s" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == [".segcli", "clip_overlay.mp4"] and no_temporaries(out)
    again = cli("predict", model_file, clip, "--out", out)  # predict's own output is replaced
    assert again.exit_code == 0, again.output


def test_masks_equal_predicting_each_decoded_frame(loaded, clip, tmp_path):
    """The source is lossy: each mask is compared with predicting the frame as OpenCV decodes it."""
    results = predict_videos(loaded, [clip], tmp_path, masks=True, batch_size=4)
    assert [(r.frames, r.fps, r.width, r.height) for r in results] == [(N, FPS, W, H)]
    masks = sorted((tmp_path / "clip").iterdir())
    assert [p.name for p in masks] == [f"{i:06d}.png" for i in range(1, N + 1)]
    palette = loaded.classes.palette()
    for path, frame in zip(masks, decoded(clip)):
        expected = predict_labels(loaded.model, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), stride=loaded.output_stride)
        np.testing.assert_array_equal(read_label_png(path), expected)
        np.testing.assert_array_equal(read_png_palette(path)[:K], palette[:K])


def test_tta_and_tiles_apply_per_frame(loaded, tmp_path):
    short = write_clip(tmp_path / "short.mp4", frames=3)
    predict_videos(loaded, [short], tmp_path / "out", masks=True, tta="flip", tile=16, overlap=8)
    for i, frame in enumerate(decoded(short), 1):
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        expected = predict_labels(loaded.model, rgb, stride=loaded.output_stride, tta="flip", tile=16, overlap=8)
        np.testing.assert_array_equal(read_label_png(tmp_path / "out" / "short" / f"{i:06d}.png"), expected)


def test_sources_that_cannot_be_opened_are_one_line(cli, model_file, tmp_path, monkeypatch):
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all")
    out = tmp_path / "preds"
    for args, named in [(["junk.mp4"], "junk.mp4: cannot open this video"), (["missing.mp4"], "no such file")]:
        result = cli("predict", model_file, tmp_path / args[0], "--out", out)
        assert result.exit_code == 2 and named in one_error_line(result)
    fake_source(monkeypatch, FakeCapture([], opened=False))
    for args, named in [(["--source", "3"], "camera 3: no camera"),
                        (["rtsp://cam.local/live/front"], "rtsp://cam.local/live/front: cannot open this stream")]:
        result = cli("predict", model_file, *args, "--out", out)
        assert result.exit_code == 2 and named in one_error_line(result)
    assert not out.exists()  # checked before anything is written


def test_probabilities_and_mixed_inputs_are_refused(cli, model_file, clip, tmp_path):
    result = cli("predict", model_file, clip, "--probabilities", "--out", tmp_path / "p")
    assert result.exit_code == 2 and "--probabilities is for images" in one_error_line(result)
    result = cli("predict", model_file, clip, model_file, "--out", tmp_path / "p")
    assert result.exit_code == 2 and "separate runs" in one_error_line(result)


def test_a_users_file_is_never_replaced(cli, model_file, clip, tmp_path):
    out = tmp_path / "preds"
    out.mkdir()
    (out / "clip_overlay.mp4").write_bytes(b"mine")
    result = cli("predict", model_file, clip, "--out", out)
    assert result.exit_code == 2 and "did not write it" in one_error_line(result)
    assert (out / "clip_overlay.mp4").read_bytes() == b"mine"


def test_camera_that_stops_early_keeps_its_frames_and_says_so(cli, model_file, clip, tmp_path, monkeypatch):
    fake = FakeCapture(decoded(clip)[:7], fps=30.0)
    assert fake_source(monkeypatch, fake) == []
    result = cli("predict", model_file, "--source", "0", "--out", tmp_path / "preds")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "camera 0: the camera stopped giving frames after 7" in line and "camera0_overlay.mp4" in line
    assert video_facts(tmp_path / "preds" / "camera0_overlay.mp4") == (7, 30.0, W, H)
    assert fake.released and no_temporaries(tmp_path / "preds")


def test_stream_without_a_count_or_rate_ends_normally(cli, model_file, clip, tmp_path, monkeypatch):
    opened = fake_source(monkeypatch, FakeCapture(decoded(clip)[:6], fps=0.0, count=0))
    result = cli("predict", model_file, "rtsp://cam.local/live/front", "--out", tmp_path / "preds")
    assert result.exit_code == 0, result.output
    assert opened == ["rtsp://cam.local/live/front"]
    assert "does not say its frame rate" in result.stderr
    assert video_facts(tmp_path / "preds" / "front_overlay.mp4") == (6, capture.UNKNOWN_FPS, W, H)


def test_a_truncated_file_ends_early_in_one_line(cli, model_file, tmp_path):
    full = write_clip(tmp_path / "full.avi", fourcc="MJPG")
    data = full.read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[:len(data) // 2])  # its header still says 12 frames
    result = cli("predict", model_file, tmp_path / "cut.avi", "--out", tmp_path / "preds")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert f"of its {N} frames" in line
    kept = video_facts(tmp_path / "preds" / "cut_overlay.mp4")[0]
    assert 0 < kept < N and f"ended after {kept} of its" in line


def test_ctrl_c_after_k_frames_leaves_a_playable_video_of_k_frames(cli, model_file, clip, tmp_path, monkeypatch):
    """KeyboardInterrupt raised by the capture on its 6th read: the 5 frames read before are all written."""
    out = tmp_path / "preds"
    first = cli("predict", model_file, clip, "--out", out, "--masks")  # masks of 12 frames, replaced below
    assert first.exit_code == 0, first.output
    fake_source(monkeypatch, FakeCapture(decoded(clip), fps=FPS, count=N, interrupt_at=5))
    result = cli("predict", model_file, clip, "--out", out, "--masks")
    assert result.exit_code == 130
    assert result.stderr.strip().splitlines()[-1] == "interrupted" and "Traceback" not in result.output
    assert video_facts(out / "clip_overlay.mp4") == (5, FPS, W, H)
    assert sorted(p.name for p in (out / "clip").iterdir()) == [f"{i:06d}.png" for i in range(1, 6)]
    assert no_temporaries(out)


def test_a_real_ctrl_c_stops_reading_and_closes_the_video(loaded, clip, tmp_path):
    """SIGINT once the 2nd frame is written (batches of 2): the first Ctrl-C stops reading, the frames queued
    are dropped, and the video is closed with the 2 frames written, playable."""
    def ctrl_c(done):
        if done == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(VideoInterrupted) as caught:
        predict_videos(loaded, [clip], tmp_path, batch_size=2, progress=Recorder(on_advance=ctrl_c))
    assert caught.value.exit_code == 130 and caught.value.results[0].frames == 2
    assert video_facts(tmp_path / "clip_overlay.mp4") == (2, FPS, W, H)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler and no_temporaries(tmp_path)


class Recorder(Progress):
    def __init__(self, fake=None, on_advance=None):
        self.calls, self.fake, self.ahead, self.on_advance = [], fake, [], on_advance

    def start(self, task, total=None):
        self.calls.append(("start", task, total))

    def advance(self, task, done, total=None, info=""):
        self.calls.append(("advance", done, info))
        if self.fake is not None:
            self.ahead.append(self.fake.reads - done)
        if self.on_advance is not None:
            self.on_advance(done)


def test_the_queue_bounds_frames_read_ahead_of_the_model(loaded, clip, tmp_path, monkeypatch):
    """Fake reads are instant: without the bound, the reader would be all 60 frames ahead at the first write."""
    fake = FakeCapture(decoded(clip) * 5, fps=FPS, count=60)
    fake_source(monkeypatch, fake)
    progress = Recorder(fake)
    results = predict_videos(loaded, [clip], tmp_path, batch_size=2, queue_size=3, progress=progress)
    assert results[0].frames == 60
    assert max(progress.ahead) <= 3 + 2 + 1  # the queue, a batch, the frame the reader holds while waiting
    assert progress.calls[0] == ("start", "predict clip", 60)
    done, info = progress.calls[1][1:]
    assert done == 1 and "frames/s" in info and "left" in info


def test_help_names_videos_cameras_and_masks(cli):
    result = cli("predict", "--help")
    text = " ".join(result.stdout.split())
    assert result.exit_code == 0 and "--source" in text and "--masks" in text and "stream URLs" in text


@pytest.mark.slow
def test_an_exported_model_predicts_a_video_as_the_keras_one(cli, model_file, loaded, clip, tmp_path):
    """The engines (segcli.inference.engines) run videos too: an ONNX export's masks agree with Keras'."""
    pytest.importorskip("tensorflow")  # exports are written on the tensorflow backend
    from segcli.export import export_model
    from segcli.export.guards import missing_onnx_packages
    from segcli.inference.engines import installed

    if missing_onnx_packages() or not installed("onnxruntime"):
        pytest.skip("the ONNX export or ONNX Runtime is not installed")
    export_model(model_file, "onnx", tmp_path / "tiny.onnx")
    result = cli("predict", tmp_path / "tiny.onnx", clip, "--masks", "--precision", "float32", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    predict_videos(loaded, [clip], tmp_path / "k", masks=True)
    for i in range(1, N + 1):
        name = f"clip/{i:06d}.png"
        assert np.mean(read_label_png(tmp_path / "o" / name) == read_label_png(tmp_path / "k" / name)) >= 0.999
