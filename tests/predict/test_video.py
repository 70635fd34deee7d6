"""Video write → read round trip (skipped without the optional PyAV dependency)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from clip2depth.errors import Clip2DepthError, DataError
from clip2depth.io.video import VideoWriter, iter_video_frames, video_info

try:
    import av
except ImportError:
    av = None

requires_av = pytest.mark.skipif(av is None, reason="PyAV not installed (pip install 'clip2depth[video]')")


def test_missing_pyav_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    with pytest.raises(Clip2DepthError, match=r"clip2depth\[video\]"):
        video_info(tmp_path / "clip.mp4")


def _frame(i: int, height: int = 24, width: int = 32) -> np.ndarray:
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:, : width // 2] = (200, 30, 30)
    frame[:, width // 2 :] = (30, 30, 200)
    frame[:4] = (30, 20 * i, 30)
    return frame


@requires_av
def test_video_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out" / "clip.mp4"
    frames = [_frame(i) for i in range(4)]
    with VideoWriter(path, fps=12.0, size=(32, 24)) as writer:
        for frame in frames:
            writer.write(frame)

    info = video_info(path)
    back = list(iter_video_frames(path))

    assert (info.width, info.height, info.fps, info.frame_count) == (32, 24, 12.0, 4)
    assert len(back) == 4 and all(f.shape == (24, 32, 3) and f.dtype == np.uint8 for f in back)
    for got, want in zip(back, frames, strict=True):
        assert np.abs(got[8:, 2:12].mean(axis=(0, 1)) - want[12, 4]).max() < 12
        assert np.abs(got[8:, 20:30].mean(axis=(0, 1)) - want[12, 24]).max() < 12
    assert sorted(p.name for p in path.parent.iterdir()) == ["clip.mp4"]


@requires_av
@pytest.mark.skipif(
    av is not None and not hasattr(av.video.stream.VideoStream, "set_display_rotation"),
    reason="this PyAV cannot write a display matrix",
)
def test_display_rotation_is_applied(tmp_path: Path) -> None:
    # Stored landscape, red left / blue right, with "rotate 90° clockwise" as phones write portrait video.
    path = tmp_path / "portrait.mp4"
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=10)
    stream.width, stream.height, stream.pix_fmt = 32, 16, "yuv420p"
    stream.set_display_rotation(-90)
    frame = av.VideoFrame.from_ndarray(_frame(0, 16, 32), format="rgb24")
    frame.pts = 0
    for packet in [*stream.encode(frame), *stream.encode(None)]:
        container.mux(packet)
    container.close()

    upright = next(iter_video_frames(path))

    assert upright.shape == (32, 16, 3)
    assert (video_info(path).width, video_info(path).height) == (16, 32)
    assert upright[4:12, 2:12, 0].mean() > 150  # red now on top
    assert upright[20:30, 2:12, 2].mean() > 150


@requires_av
def test_failed_write_leaves_nothing_and_bad_input_names_file(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), VideoWriter(tmp_path / "x.mp4", fps=5, size=(16, 16)) as writer:
        writer.write(_frame(0, 16, 16))
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []

    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(DataError, match="bad.mp4"):
        video_info(tmp_path / "bad.mp4")
