"""Video input behind one interface: a file (PyAV), a folder of frames, or an array of frames.

`open_video(source)` returns a `Video`:

* ``len(v)``, ``v.fps``, ``v.width``, ``v.height``, ``v.size == (w, h)``, ``v.frame_names``;
* ``v[i]`` random access (negative indices allowed) -> ``(H, W, 3)`` uint8 RGB;
* ``for frame in v`` streams the frames in order without keeping them;
* ``v.iter_frames(indices)`` yields ``(index, frame)`` for sorted indices, decoding files
  sequentially and seeking only past a keyframe that lets it skip work;
* ``v.sample_indices(k)`` = every k-th frame starting at 0;
* ``v.close()`` / ``with open_video(...) as v``.

Files are indexed once on open by demuxing their packets (no decoding): that gives an exact frame
count even when the container's metadata is missing or wrong, the presentation timestamp of every
frame (so variable frame rate files index correctly) and where the keyframes are. Random access
seeks to the keyframe at or before the target and decodes forward; a small LRU cache keeps the
last few frames so neighbourhood look-ups (frame i-1, i, i+1) do not decode twice. Streams without
packet timestamps (raw ``.h264``) are counted by decoding once and read by decoding from the
start. Frames come out as stored: rotation metadata (phone videos) is not applied.

`write_video(path, frames)` streams frames from any iterable into an H.264 (libx264) or MPEG-4
file with PyAV, atomically (temp file + `os.replace`).
"""

from __future__ import annotations

import abc
import bisect
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from videomolmo.errors import ConfigError, VideoError

__all__ = [
    "DEFAULT_FPS",
    "FRAME_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "ArrayVideo",
    "FileVideo",
    "FolderVideo",
    "ImageSequenceVideo",
    "Video",
    "natural_key",
    "open_video",
    "write_video",
]

#: Frame rate assumed for frame folders and arrays, which carry none.
DEFAULT_FPS = 30.0
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
#: Common containers, for callers that scan folders; `open_video` itself tries any file with PyAV.
VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".gif")


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers by value: ``2.jpg`` before ``10.jpg``."""
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(p), p) if p.isdigit() else (1, 0, p.lower()) for p in parts)


def _check_step(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"frame sampling step must be an integer >= 1, got {k!r}")
    return int(k)


class Video(abc.ABC):
    """A sequence of RGB frames with a frame rate; see the module docstring for the interface."""

    #: Human-readable origin (path, or "<array>") used in error messages.
    source: str
    fps: float
    width: int
    height: int

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @property
    @abc.abstractmethod
    def frame_names(self) -> list[str]:
        """One name per frame: file stems for folders, ``f"{i:05d}"`` otherwise."""

    @abc.abstractmethod
    def _read(self, index: int) -> np.ndarray:
        """Frame `index` (already normalised to 0 <= index < len)."""

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return (self.width, self.height)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(T, H, W, 3)``, as a stacked array of all frames would have."""
        return (len(self), self.height, self.width, 3)

    @property
    def duration(self) -> float:
        """Seconds, ``len / fps``."""
        return len(self) / self.fps

    def _normalise_index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"frame index must be an integer, got {type(index).__name__}")
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"frame index {index} out of range for {n} frames of {self.source}")
        return i

    def __getitem__(self, index: int) -> np.ndarray:
        return self._read(self._normalise_index(index))

    def __iter__(self) -> Iterator[np.ndarray]:
        for _, frame in self.iter_frames(range(len(self))):
            yield frame

    def iter_frames(self, indices: Iterable[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, frame)`` for `indices` (all frames if None) in increasing order.

        Indices are normalised (negatives count from the end), de-duplicated and sorted.
        """
        for i in self._sorted_indices(indices):
            yield i, self._read(i)

    def _sorted_indices(self, indices: Iterable[int] | None) -> list[int]:
        if indices is None:
            return list(range(len(self)))
        return sorted({self._normalise_index(i) for i in indices})

    def sample_indices(self, k: int) -> list[int]:
        """Every `k`-th frame index starting at 0 (``k >= 1``; `ConfigError` otherwise)."""
        return list(range(0, len(self), _check_step(k)))

    def close(self) -> None:
        """Release file handles; the object must not be used afterwards."""

    def __enter__(self) -> "Video":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.source!r}, frames={len(self)}, "
            f"size={self.width}x{self.height}, fps={self.fps:g})"
        )


# --------------------------------------------------------------------------- arrays


class ArrayVideo(Video):
    """Frames already in memory: a ``(T, H, W, 3)`` uint8 array or a list of ``(H, W, 3)`` frames."""

    def __init__(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        fps: float | None = None,
        frame_names: Sequence[str] | None = None,
        source: str = "<frames>",
    ) -> None:
        self.source = source
        if isinstance(frames, np.ndarray):
            if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
                raise VideoError(
                    f"{source}: frame array must be (T, H, W, 3) uint8 RGB, "
                    f"got shape {frames.shape} dtype {frames.dtype}"
                )
            self._frames: np.ndarray | list[np.ndarray] = frames
        else:
            self._frames = [np.asarray(f) for f in frames]
            for i, f in enumerate(self._frames):
                if f.ndim != 3 or f.shape[-1] != 3 or f.dtype != np.uint8:
                    raise VideoError(
                        f"{source}: frame {i} must be (H, W, 3) uint8 RGB, got shape {f.shape} dtype {f.dtype}"
                    )
                if f.shape != self._frames[0].shape:
                    raise VideoError(
                        f"{source}: frame {i} is {f.shape[1]}x{f.shape[0]} but frame 0 is "
                        f"{self._frames[0].shape[1]}x{self._frames[0].shape[0]}"
                    )
        if len(self._frames) == 0:
            raise VideoError(f"{source}: no frames")
        self.height, self.width = (int(s) for s in self._frames[0].shape[:2])
        self.fps = _check_fps(fps, source) if fps is not None else DEFAULT_FPS
        if frame_names is not None:
            if len(frame_names) != len(self._frames):
                raise VideoError(
                    f"{source}: {len(frame_names)} frame names for {len(self._frames)} frames"
                )
            self._names = [str(n) for n in frame_names]
        else:
            self._names = [f"{i:05d}" for i in range(len(self._frames))]

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def frame_names(self) -> list[str]:
        return list(self._names)

    def _read(self, index: int) -> np.ndarray:
        return self._frames[index]


def _check_fps(fps: float, source: str) -> float:
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: fps must be a number, got {fps!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise ConfigError(f"{source}: fps must be positive, got {fps!r}")
    return value


# --------------------------------------------------------------------------- frame folders


def _imread_flags() -> int | None:
    import cv2

    rgb = getattr(cv2, "IMREAD_COLOR_RGB", None)
    if rgb is None:
        return None
    # Ignore EXIF rotation as PIL and ffmpeg do: masks are aligned with the stored pixels.
    return rgb | cv2.IMREAD_IGNORE_ORIENTATION


def _read_image_rgb(path: Path) -> np.ndarray:
    """Decode one frame image as RGB uint8: OpenCV when it can (about 1.6x faster than PIL on
    DAVIS JPEGs, identical pixels), PIL otherwise and for the error message."""
    flags = _imread_flags()
    if flags is not None:
        import cv2

        try:
            frame = cv2.imread(str(path), flags)
        except cv2.error:
            # OpenCV asserts on images over its pixel limit (a header claiming 100000x100000):
            # PIL below names the problem.
            frame = None
        if frame is not None and frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8:
            return frame
    return _read_image_rgb_pil(path)


def _read_image_rgb_pil(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode != "RGB":
                im = im.convert("RGB")
            return np.asarray(im)
    except FileNotFoundError:
        raise VideoError(f"{path}: frame file disappeared") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise VideoError(f"{path}: unreadable frame image ({exc.__class__.__name__}: {exc})") from None


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # reads the header only
            return im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise VideoError(f"{path}: unreadable frame image ({exc.__class__.__name__}: {exc})") from None


class ImageSequenceVideo(Video):
    """Frames stored as image files (jpg/jpeg/png), in the order given.

    The size comes from the first frame's header; every frame read is checked against it, so a
    frame of a different size raises `VideoError` naming that file when it is reached (set
    ``check_sizes=True`` to check every header up front instead). Frame names default to the
    file stems.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        fps: float | None = None,
        frame_names: Sequence[str] | None = None,
        check_sizes: bool = False,
        source: str | None = None,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.source = source or (str(self.paths[0].parent) if self.paths else "<image list>")
        if not self.paths:
            raise VideoError(f"{self.source}: no frame images given")
        if frame_names is None:
            frame_names = [p.stem for p in self.paths]
        elif len(frame_names) != len(self.paths):
            raise VideoError(f"{self.source}: {len(frame_names)} frame names for {len(self.paths)} frames")
        self._names = [str(n) for n in frame_names]
        missing = next((p for p in self.paths if not p.is_file()), None)
        if missing is not None:
            raise VideoError(f"{missing}: frame image does not exist")
        self.width, self.height = _image_size(self.paths[0])
        self.fps = _check_fps(fps, self.source) if fps is not None else DEFAULT_FPS
        if check_sizes:
            for p in self.paths[1:]:
                self._check_size(p, _image_size(p))

    def _check_size(self, path: Path, size: tuple[int, int]) -> None:
        if tuple(size) != (self.width, self.height):
            raise VideoError(
                f"{path}: frame is {size[0]}x{size[1]} but {self.paths[0].name} is "
                f"{self.width}x{self.height} (frames of one video must share a size)"
            )

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def frame_names(self) -> list[str]:
        return list(self._names)

    def _read(self, index: int) -> np.ndarray:
        path = self.paths[index]
        frame = _read_image_rgb(path)
        self._check_size(path, (frame.shape[1], frame.shape[0]))
        return frame


class FolderVideo(ImageSequenceVideo):
    """A folder of ``.jpg`` / ``.jpeg`` / ``.png`` frames in natural order (``2.jpg`` < ``10.jpg``).

    Hidden files and other extensions are ignored; two frames with the same stem (``1.jpg`` and
    ``1.png``) are an error because frame names must be unique.
    """

    def __init__(self, folder: str | os.PathLike, fps: float | None = None, check_sizes: bool = False) -> None:
        self.folder = Path(folder)
        try:
            entries = [
                p
                for p in self.folder.iterdir()
                if p.suffix.lower() in FRAME_EXTENSIONS and not p.name.startswith(".") and p.is_file()
            ]
        except OSError as exc:
            raise VideoError(f"{self.folder}: cannot list frame folder ({exc.strerror or exc})") from None
        if not entries:
            raise VideoError(f"{self.folder}: folder has no .jpg/.jpeg/.png frames")
        paths = sorted(entries, key=lambda p: natural_key(p.name))
        stems = [p.stem for p in paths]
        if len(set(stems)) != len(stems):
            dup = next(s for s in stems if stems.count(s) > 1)
            raise VideoError(f"{self.folder}: two frames share the name {dup!r} (e.g. .jpg and .png)")
        super().__init__(paths, fps=fps, check_sizes=check_sizes, source=str(self.folder))


# --------------------------------------------------------------------------- video files


def _av_error_types() -> tuple[type[BaseException], ...]:
    import av

    return (av.error.FFmpegError, OSError, ValueError, EOFError)


class _FrameIndex:
    """Presentation timestamps of every frame and which of them are keyframes, from demuxing."""

    def __init__(self, pts: list[int], key_pts: list[int]) -> None:
        self.pts = pts  # sorted presentation timestamps, one per frame
        self.index_of = {p: i for i, p in enumerate(pts)}
        # Frame indices of keyframes (sorted): where a decoder may start after a seek.
        self.keyframes = sorted({self.index_of[p] for p in key_pts if p in self.index_of})
        if not self.keyframes or self.keyframes[0] != 0:
            self.keyframes.insert(0, 0)

    def keyframe_at_or_before(self, index: int) -> int:
        return self.keyframes[bisect.bisect_right(self.keyframes, index) - 1]


class _Decoder:
    """One open container decoding forward from a position; seeks when that skips work."""

    def __init__(self, video: "FileVideo", threads: bool) -> None:
        from av.video.reformatter import VideoReformatter

        self.video = video
        self.threads = threads
        self._open()
        # One reformatter per decoder: it keeps its swscale context between frames, which makes
        # YUV -> RGB 2-20x faster than `frame.to_ndarray(format="rgb24")` building one per call.
        self._rgb = VideoReformatter()
        self._frames: Iterator | None = None
        self._used = False  # whether the container has been read from (a restart must seek)
        self.next_index = 0  # index of the frame the live decoder would return next

    def _open(self) -> None:
        import av

        try:
            self.container = av.open(str(self.video.path), mode="r")
        except _av_error_types() as exc:
            raise VideoError(f"{self.video.path}: cannot open video ({_short(exc)})") from None
        self.stream = self.container.streams.video[self.video.stream_index]
        if self.threads:
            # Frame threads speed up sequential decoding; ffmpeg still returns frames in order.
            self.stream.thread_type = "AUTO"

    def _rewind(self) -> None:
        # Reopening always works, unlike seeking to 0 in raw streams (.h264) or pipes.
        self.close()
        self._open()

    def _restart_at(self, index: int) -> None:
        idx = self.video._index
        # Without timestamps (raw streams) positions are only known by counting from the start;
        # files whose keyframe flags proved wrong are also only decoded from the start.
        start = 0 if idx is None or self.video._seek_unreliable else idx.keyframe_at_or_before(index)
        if start == 0:
            if self._used:
                self._rewind()
        else:
            try:
                self.container.seek(idx.pts[start], backward=True, any_frame=False, stream=self.stream)
            except _av_error_types():
                # A container that cannot seek: decode from the start from now on.
                self.video._seek_unreliable = True
                self._rewind()
                start = 0
        self._used = True
        self.video.stats["seeks"] += 1
        self._frames = self.container.decode(self.stream)
        self.next_index = start

    def read(self, index: int) -> np.ndarray:
        """Decode frame `index`, reusing the running decoder when that is cheaper than seeking."""
        idx = self.video._index
        must_restart = self._frames is None or index < self.next_index
        if not must_restart and idx is not None:
            # Seeking pays only if a keyframe lies strictly after the current position.
            must_restart = idx.keyframe_at_or_before(index) > self.next_index
        if must_restart:
            self._restart_at(index)
        try:
            while True:
                frame = next(self._frames)  # type: ignore[arg-type]
                self.video.stats["decoded"] += 1
                if idx is not None and frame.pts is not None and frame.pts in idx.index_of:
                    i = idx.index_of[frame.pts]
                else:
                    i = self.next_index
                self.next_index = i + 1
                if i == index:
                    # ffmpeg pads rows to an aligned stride; consumers expect C-contiguous frames.
                    return np.ascontiguousarray(self._rgb.reformat(frame, format="rgb24").to_ndarray())
                if i > index:
                    # The decoder skipped the target, which happens after a seek to a packet
                    # falsely flagged as a keyframe: stop seeking in this file and decode from 0.
                    if self.video._seek_unreliable or idx is None:
                        raise VideoError(f"{self.video.path}: frame {index} could not be decoded (timestamps jump)")
                    self.video._seek_unreliable = True
                    return self.read_from_start(index)
        except StopIteration:
            self._frames = None
            raise VideoError(
                f"{self.video.path}: frame {index} is missing; the file ends after {self.next_index} decodable frames"
            ) from None
        except _av_error_types() as exc:
            self._frames = None
            raise VideoError(f"{self.video.path}: corrupt video data near frame {index} ({_short(exc)})") from None

    def read_from_start(self, index: int) -> np.ndarray:
        self._frames = None
        self._restart_at(0)
        return self.read(index)

    def close(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 -- closing a broken container must not mask the real error
            pass


class FileVideo(Video):
    """A video file decoded with PyAV (mp4, webm, avi, mov, mkv, ...): first video stream."""

    def __init__(self, path: str | os.PathLike, fps: float | None = None, cache_size: int = 8) -> None:
        import av

        self.path = Path(path)
        self.source = str(self.path)
        self._seek_unreliable = False
        #: Work counters over the object's life: frames decoded, decoder (re)starts incl. seeks.
        self.stats = {"decoded": 0, "seeks": 0}
        try:
            size = self.path.stat().st_size
        except OSError as exc:
            raise VideoError(f"{self.path}: cannot read video file ({exc.strerror or exc})") from None
        if size == 0:
            raise VideoError(f"{self.path}: empty file (0 bytes)")
        try:
            container = av.open(str(self.path), mode="r")
        except _av_error_types() as exc:
            raise VideoError(f"{self.path}: not a readable video file ({_short(exc)})") from None
        try:
            if not container.streams.video:
                raise VideoError(f"{self.path}: file has no video stream")
            stream = container.streams.video[0]
            self.stream_index = 0
            self.width = int(stream.codec_context.width or 0)
            self.height = int(stream.codec_context.height or 0)
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            meta_fps = float(rate) if rate else 0.0
            self.metadata_frames = int(stream.frames or 0)
            self._time_base = stream.time_base
            self._index = self._build_index(container, stream)
        except _av_error_types() as exc:
            raise VideoError(f"{self.path}: corrupt video file ({_short(exc)})") from None
        finally:
            container.close()
        if self._index is not None:
            self._n = len(self._index.pts)
        else:
            self._n = self._count_by_decoding()
        if self._n == 0:
            raise VideoError(f"{self.path}: video has zero frames")
        if self.width <= 0 or self.height <= 0:
            raise VideoError(f"{self.path}: video stream has no frame size")
        if fps is not None:
            self.fps = _check_fps(fps, self.source)
        elif meta_fps > 0 and np.isfinite(meta_fps):
            self.fps = meta_fps
        else:
            self.fps = DEFAULT_FPS
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = max(0, int(cache_size))
        self._random: _Decoder | None = None
        self._lock = threading.Lock()

    def _build_index(self, container, stream) -> _FrameIndex | None:
        """Frame timestamps from packets (no decoding); None when the file lacks timestamps."""
        pts: list[int] = []
        key_pts: list[int] = []
        for packet in container.demux(stream):
            if packet.size == 0:  # the flush packet at the end of the stream
                continue
            if packet.is_discard:  # outside an mp4 edit list: decoded but never shown
                continue
            if packet.pts is None:
                return None
            pts.append(packet.pts)
            if packet.is_keyframe:
                key_pts.append(packet.pts)
        if len(set(pts)) != len(pts):
            return None  # duplicate timestamps cannot map to frame indices
        return _FrameIndex(sorted(pts), key_pts)

    def _count_by_decoding(self) -> int:
        """Exact frame count by decoding once, for files whose packets carry no timestamps."""
        decoder = _Decoder(self, threads=True)
        n = 0
        try:
            for _ in decoder.container.decode(decoder.stream):
                n += 1
        except _av_error_types() as exc:
            raise VideoError(f"{self.path}: corrupt video data after frame {n} ({_short(exc)})") from None
        finally:
            decoder.close()
        return n

    def __len__(self) -> int:
        return self._n

    @property
    def frame_names(self) -> list[str]:
        return [f"{i:05d}" for i in range(self._n)]

    @property
    def timestamps(self) -> np.ndarray | None:
        """Presentation time of each frame in seconds from the first, when the file has them."""
        if self._index is None or self._time_base is None:
            return None
        pts = np.asarray(self._index.pts, dtype=np.float64)
        return (pts - pts[0]) * float(self._time_base)

    def _read(self, index: int) -> np.ndarray:
        # One lock: the random-access decoder is stateful and a web demo may share the object
        # between threads. Callers get copies so that drawing on a frame cannot corrupt the cache.
        with self._lock:
            cached = self._cache.get(index)
            if cached is not None:
                self._cache.move_to_end(index)
                return cached.copy()
            if self._random is None:
                self._random = _Decoder(self, threads=False)
            frame = self._random.read(index)
            if self._cache_size:
                self._cache[index] = frame
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
                return frame.copy()
            return frame

    def __getstate__(self) -> dict:
        # Picklable for multiprocessing workers: open decoders and cached frames stay behind.
        state = self.__dict__.copy()
        state["_random"] = None
        state["_cache"] = OrderedDict()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def iter_frames(self, indices: Iterable[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Stream ``(index, frame)`` for sorted `indices` with a decoder of its own.

        Consecutive wanted frames are decoded sequentially; the decoder seeks only when a
        keyframe lies between the current position and the next wanted frame. Nothing is kept:
        memory stays at one frame plus the decoder's own small window.
        """
        wanted = self._sorted_indices(indices)
        if not wanted:
            return
        decoder = _Decoder(self, threads=True)
        try:
            for i in wanted:
                yield i, decoder.read(i)
        finally:
            decoder.close()

    def close(self) -> None:
        with self._lock:
            if self._random is not None:
                self._random.close()
                self._random = None
            self._cache.clear()


def _short(exc: BaseException) -> str:
    """ffmpeg's reason without the errno and the repeated file name: 'Invalid data found ...'."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)
    text = re.sub(r""":\s*'[^']*'$""", "", text)
    return text[:200] or exc.__class__.__name__


# --------------------------------------------------------------------------- entry point


def open_video(
    source: "str | os.PathLike | np.ndarray | Sequence[np.ndarray] | Video",
    fps: float | None = None,
) -> Video:
    """Open a video file, a frame folder, or in-memory frames as a `Video`.

    Args:
        source: path to a video file (anything PyAV/ffmpeg reads), path to a folder of
            jpg/jpeg/png frames, a list of frame image paths (kept in the given order), a
            ``(T, H, W, 3)`` uint8 array, a list of ``(H, W, 3)`` uint8 frames, or an existing
            `Video` or any other object with `len()` and frame indexing (returned unchanged).
        fps: overrides the frame rate (files: metadata; folders/arrays: 30).

    Raises:
        VideoError: missing path, empty/corrupt/non-video file, zero frames, empty folder,
            unreadable frame image, frames of different sizes.
    """
    if isinstance(source, Video):
        if fps is not None:
            source.fps = _check_fps(fps, source.source)
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return FolderVideo(path, fps=fps)
        if not path.exists():
            raise VideoError(f"{path}: no such video file or frame folder")
        return FileVideo(path, fps=fps)
    if isinstance(source, np.ndarray):
        return ArrayVideo(source, fps=fps, source="<array>")
    if isinstance(source, (list, tuple)):
        if source and all(isinstance(x, (str, os.PathLike)) for x in source):
            return ImageSequenceVideo(list(source), fps=fps)
        return ArrayVideo(list(source), fps=fps, source="<frame list>")
    if hasattr(source, "__getitem__") and hasattr(source, "__len__"):
        # An already open video of another kind (a caching wrapper, a dataset's lazy frames):
        # used as it is, frame by frame.
        if len(source) == 0:
            raise VideoError(f"{type(source).__name__}: the video has no frames")
        return source  # type: ignore[return-value]
    raise VideoError(f"cannot open a video from a {type(source).__name__}")


# --------------------------------------------------------------------------- writing


def _pick_codec(suffix: str, codec: str | None) -> str:
    import av

    if codec is not None:
        if codec not in av.codecs_available:
            raise VideoError(f"video codec {codec!r} is not available in this PyAV build")
        return codec
    if suffix == ".webm":
        for name in ("libvpx-vp9", "libvpx"):
            if name in av.codecs_available:
                return name
        raise VideoError("no VP8/VP9 encoder in this PyAV build for .webm output")
    if suffix in (".mp4", ".mov", ".mkv", ".m4v") and "libx264" in av.codecs_available:
        return "libx264"
    return "mpeg4"


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float = 30.0,
    crf: int | None = 23,
    preset: str = "medium",
    codec: str | None = None,
    bit_rate: int | None = None,
    gop: int | None = None,
) -> int:
    """Encode RGB frames from an iterable into a video file, streaming; returns the frame count.

    The codec follows the extension: H.264 (libx264, `crf` / `preset` apply) for .mp4/.mov/.mkv,
    VP9 for .webm, MPEG-4 part 2 otherwise (`bit_rate`, default 8 Mbit/s, applies). Odd frame
    sizes are padded by one replicated row/column because 4:2:0 chroma needs even sizes. `gop`
    sets the keyframe interval (shorter = faster random access, larger file). The
    file appears only when complete (written to a temp name, then `os.replace`).
    """
    import av

    path = Path(path)
    suffix = path.suffix.lower()
    if not suffix:
        raise VideoError(f"{path}: output video needs an extension such as .mp4")
    fps = _check_fps(fps, str(path))
    codec_name = _pick_codec(suffix, codec)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    count = 0
    container = None
    try:
        container = av.open(str(tmp), mode="w")
        stream = None
        width = height = 0
        for frame in frames:
            frame = np.asarray(frame)
            if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
                raise VideoError(
                    f"{path}: frame {count} must be (H, W, 3) uint8 RGB, got shape {frame.shape} dtype {frame.dtype}"
                )
            if stream is None:
                height, width = frame.shape[:2]
                stream = _add_stream(container, codec_name, fps, width, height, crf, preset, bit_rate, gop)
            elif frame.shape[:2] != (height, width):
                raise VideoError(
                    f"{path}: frame {count} is {frame.shape[1]}x{frame.shape[0]}, frame 0 is {width}x{height}"
                )
            if stream.width != width or stream.height != height:
                frame = np.pad(
                    frame, ((0, stream.height - height), (0, stream.width - width), (0, 0)), mode="edge"
                )
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(vf):
                container.mux(packet)
            count += 1
        if stream is None:
            raise VideoError(f"{path}: no frames to write")
        for packet in stream.encode():
            container.mux(packet)
        container.close()
        container = None
        os.replace(tmp, path)
    finally:
        if container is not None:
            try:
                container.close()
            except Exception:  # noqa: BLE001 -- the original error matters, not the cleanup
                pass
        if tmp.exists():
            tmp.unlink()
    return count


def _add_stream(container, codec_name: str, fps: float, width: int, height: int, crf, preset, bit_rate, gop):
    from fractions import Fraction

    rate = Fraction(fps).limit_denominator(1001)
    stream = container.add_stream(codec_name, rate=rate)
    stream.width = width + (width % 2)
    stream.height = height + (height % 2)
    stream.pix_fmt = "yuv420p"
    if gop is not None:
        if int(gop) < 1:
            raise ConfigError(f"keyframe interval (gop) must be >= 1, got {gop!r}")
        stream.codec_context.gop_size = int(gop)
    options: dict[str, str] = {}
    if codec_name == "libx264":
        if crf is not None:
            options["crf"] = str(int(crf))
        options["preset"] = preset
    elif codec_name.startswith("libvpx"):
        if crf is not None:
            options["crf"] = str(int(crf))
            options["b"] = "0"  # constant-quality mode
    else:
        stream.bit_rate = int(bit_rate or 8_000_000)
    stream.options = options
    return stream
