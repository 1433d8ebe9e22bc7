"""The streaming pipeline behind ``python -m engine run`` and ``analyze``.

Every frame is decoded once, memory stays flat with the clip's length, and decoding,
detection and cropping run beside the network::

    decode thread            people thread                                main thread
    iter_frames --queue-->   detect -> OnlineTracker -> lag buffer  --queue-->  batches -> network
    (FRAME_QUEUE frames)     (a frame waits only until its boxes are          (OOM: halve the batch
                              final: at most tracker.max_lag + 1 frames)       and retry)
                             -> crops of the chosen people; the frame is dropped

OpenCV (decoding, HOG, warpAffine) and torch release the GIL, so the three threads overlap.
``python -m engine run --tracks`` replaces detection and tracking with the boxes of an
analysis file (``fixed_stream``).

``StageTimes`` sums the busy seconds of each stage (``load``: model and detector, once;
``decode``, ``detect``, ``track``, ``crop``, ``infer``, ``convert``, ``write``) and two waits: ``detect_wait`` (the people thread waiting for
decoded frames) and ``infer_wait`` (the network loop waiting for crops: the network is never
starved when this stays near 0). Stages in different threads overlap, so their sum can exceed
the wall time.
"""
from __future__ import annotations

import queue
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from engine.people.tracking import with_appearance

FRAME_QUEUE = 8            # decoded frames between the decode thread and detection
STAGES = ("load", "decode", "detect", "track", "verify", "crop", "infer", "convert", "fit", "silhouette", "write",
          "detect_wait", "infer_wait")
OUTPUT_FIELDS = ("rotmat", "betas", "cam", "joints3d", "joints2d")   # of PyMAFOutput.final, kept per crop


class Cancelled(Exception):
    """The user cancelled (SIGINT / SIGTERM)."""


class Closed(Exception):
    """Raised in a consumer of a ``Prefetch`` that was closed."""


class OutOfMemory(Exception):
    """The device ran out of memory even at batch size 1."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class StageTimes:
    """Seconds per stage, summed over a run. Each stage is timed from one thread only."""

    def __init__(self):
        self.seconds = dict.fromkeys(STAGES, 0.0)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)

    def rounded(self, digits: int = 3) -> dict:
        return {k: round(v, digits) for k, v in self.seconds.items()}


def timed(iterable, times: StageTimes, stage: str):
    """Yield ``iterable``'s items, adding the time spent producing each to ``stage``."""
    it = iter(iterable)
    try:
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            finally:
                times.add(stage, time.perf_counter() - t0)
            yield item
    finally:
        _close(it)


def _close(it) -> None:
    """Close a generator (its ``finally`` runs now, e.g. the video capture is released)."""
    close = getattr(it, "close", None)
    if close is not None:
        close()


class _Raise:
    def __init__(self, exc):
        self.exc = exc


_END = object()
_POLL_S = 0.05


class Prefetch:
    """Iterate ``source`` in a daemon thread and hand its items over through a queue of at most
    ``maxsize`` items (the producer waits while it is full, so memory stays bounded).

    An exception raised by the source reaches the consumer after every item produced before
    it (a truncated video yields its frames, then raises). ``times[wait_stage]`` gets the time
    the consumer waited for items; ``stop()`` (polled while waiting) raises ``Cancelled``.
    ``close()`` stops the producer (it ends at its next item) and closes the source."""

    def __init__(self, source, maxsize: int, times: Optional[StageTimes] = None, wait_stage: str = "",
                 stop: Optional[Callable[[], bool]] = None, name: str = "prefetch"):
        self._q = queue.Queue(maxsize)
        self._closed = threading.Event()
        self._times, self._wait_stage, self._stop = times, wait_stage, stop
        self._done = False
        self._thread = threading.Thread(target=self._work, args=(source,), name=name, daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._closed.is_set():
            try:
                self._q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                pass
        return False

    def _work(self, source):
        it = None
        try:
            it = iter(source)
            for item in it:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._put(_Raise(e))
        finally:
            _close(it)

    def __iter__(self):
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        t0 = time.perf_counter()
        try:
            while True:
                if self._closed.is_set():
                    raise Closed()
                try:
                    item = self._q.get(timeout=_POLL_S)
                    break
                except queue.Empty:
                    if self._stop is not None and self._stop():
                        raise Cancelled() from None
        finally:
            if self._times is not None:
                self._times.add(self._wait_stage, time.perf_counter() - t0)
        if item is _END:
            self._done = True
            raise StopIteration
        if isinstance(item, _Raise):
            self._done = True
            raise item.exc
        return item

    def close(self, timeout: float = 30.0) -> None:
        self._closed.set()
        while True:   # free what is queued (frames) and unblock the producer
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout)


# ----------------------------------------------------------------------------- people stage
@dataclass
class Finalised:
    """One frame whose person boxes are final."""
    index: int                        # frame index relative to the first processed frame
    timestamp: float                  # seconds
    boxes: list                       # [TrackBox] (id, xyxy, score, interpolated), ascending id
    image: Optional[np.ndarray] = None
    squares: Optional[np.ndarray] = None   # (k, 3) crop boxes (cx, cy, side) of ``boxes`` (crop stage)
    crops: Optional[list] = None            # k (224, 224, 3) uint8 crops (crop stage)


@dataclass
class StreamStats:
    frames_in: int = 0                # frames that reached the people stage
    held_max: int = 0                 # most frames held at once, waiting for final boxes
    stopped: bool = False             # track_stream ended early on stop()
    truncated: Optional[str] = None   # the truncation warning, when the video ended early
    track_ids: set = field(default_factory=set)   # every id with a final box so far


def until_truncated(frames, stats: StreamStats):
    """Pass frames through; a 'truncated' VideoError after at least one frame ends the stream
    with a warning (the frames that decode are used)."""
    from engine.video.decode import VideoError

    n = 0
    try:
        for fr in frames:
            n += 1
            yield fr
    except VideoError as e:
        if e.code != "truncated" or n == 0:
            raise
        stats.truncated = e.message
        log(f"warning: {e.message}; using the {n} frames that decode")


def _note(stats: StreamStats, n: int, held: int) -> None:
    stats.frames_in = n
    stats.held_max = max(stats.held_max, held)


def detect_every(fps: float, detector) -> int:
    """How many frames apart the detector looks: 1, or for a detector that says how many
    looks a second are enough (``detections_per_second``: people move a few pixels in a
    fifteenth of a second), the video's rate divided by that, rounded (30 fps -> 2)."""
    rate = getattr(detector, "detections_per_second", None)
    if not rate or not fps or fps <= 0:
        return 1
    return max(1, int(round(float(fps) / float(rate))))


def track_stream(frames, detector, tracker, times: StageTimes, stats: StreamStats, *, keep_images: bool = True,
                 stop: Optional[Callable[[], bool]] = None, on_frame: Optional[Callable[[int], None]] = None,
                 verifier=None, fps: float = 0.0, last: Optional[int] = None):
    """Decoded frames -> ``Finalised`` frames in order, with every final track box.

    Every ``detect_every(fps, detector)``-th frame (the first included) and the ``last`` one (the
    range's final frame: a track's box needs an observation at both ends) is detected; each frame is given to the
    ``OnlineTracker`` (None for the ones not detected: boxes there are interpolated) and held
    (its image only when ``keep_images`` or a ``verifier`` needs it) until the tracker hands
    it out as final; then the ``verifier`` (engine/people/verify.py) looks at its final boxes.
    ``stop()`` true ends the stream early: the tracker is closed on the frames seen
    (``stats.stopped``)."""
    held = {}
    hold_images = keep_images or verifier is not None
    every = detect_every(fps, detector)

    def release(finals):
        for ff in finals:
            ts, img = held.pop(ff.frame)
            stats.track_ids.update(b.id for b in ff.boxes)
            if verifier is not None and ff.boxes:
                with times("verify"):
                    verifier.observe(img, ff.boxes)
            yield Finalised(ff.frame, ts, ff.boxes, img if keep_images else None)

    n = 0
    for fr in frames:
        if stop is not None and stop():
            stats.stopped = True
            break
        dets = None
        if n % every == 0 or n == last:
            with times("detect"):
                dets = with_appearance(fr.image, detector.detect(fr.image, index=fr.index))
        held[n] = (fr.timestamp, fr.image if hold_images else None)
        n += 1
        _note(stats, n, len(held))
        with times("track"):
            finals = tracker.update(dets)
        if on_frame is not None:
            on_frame(n)
        yield from release(finals)
    with times("track"):
        finals = tracker.close()
    yield from release(finals)


def fixed_stream(frames, boxes_by_frame: dict, stats: StreamStats):
    """Decoded frames -> ``Finalised`` frames with given boxes ({relative frame: [TrackBox]})."""
    n = 0
    for fr in frames:
        boxes = boxes_by_frame.get(n, [])
        stats.track_ids.update(b.id for b in boxes)
        yield Finalised(n, fr.timestamp, boxes, fr.image)
        n += 1
        _note(stats, n, 1)


def crop_stream(items, people, times: StageTimes):
    """Keep the boxes of ``people`` (a set of ids; None: everyone), crop each one from its
    frame with the official preprocessing, and let go of the frame."""
    from engine.people.tracking import xyxy_to_square
    from engine.preprocess import crop_person

    for it in items:
        with times("crop"):
            it.boxes = [b for b in it.boxes if people is None or b.id in people]
            it.squares = xyxy_to_square(np.array([b.xyxy for b in it.boxes]).reshape(-1, 4))
            it.crops = [crop_person(it.image, s[:2], s[2]) for s in it.squares]
            it.image = None
        yield it


# ----------------------------------------------------------------------------- network stage
class Batcher:
    """``predictor.predict`` on a list of crops -> (crops used, {field: float32 array}).

    Uses up to ``batch_size`` crops. On CUDA the batch goes through a pinned staging buffer
    (``Predictor.predict`` copies it with ``non_blocking``) and the outputs come back in one
    device->host copy, which also synchronises, so ``infer`` times the real work. On
    ``torch.OutOfMemoryError`` the cache is freed, the batch halved (for the rest of the run)
    and the same crops retried, with one warning; at batch 1 ``OutOfMemory`` is raised."""

    def __init__(self, predictor, batch_size: int, times: StageTimes):
        import torch

        self.predictor, self.batch_size, self.times = predictor, int(batch_size), times
        self.device = getattr(predictor, "device", torch.device("cpu"))
        self.warned = False
        self._pinned = None

    def __call__(self, crops: list):
        import torch

        while True:
            b = min(self.batch_size, len(crops))
            try:
                with self.times("infer"):
                    return b, self._predict(crops[:b])
            except torch.OutOfMemoryError:
                pass
            # outside the except block: the traceback and the tensors it holds are gone
            self._free()
            if b == 1:
                raise OutOfMemory(f"{self.device.type} out of memory even at batch size 1")
            self.batch_size = max(1, b // 2)
            if not self.warned:
                log(f"warning: {self.device.type} out of memory at batch size {b}; retrying with "
                    f"{self.batch_size} (smaller batches from here on)")
                self.warned = True

    def _free(self) -> None:
        import torch

        self._pinned = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _stage(self, crops: list):
        import torch

        if self.device.type != "cuda":
            return torch.from_numpy(np.stack(crops))
        if self._pinned is None or len(self._pinned) < len(crops):
            self._pinned = torch.empty((self.batch_size, *crops[0].shape), dtype=torch.uint8).pin_memory()
        buf = self._pinned[:len(crops)]
        np.stack(crops, out=buf.numpy())   # reused safely: the previous batch's copy finished (synced below)
        return buf

    def _predict(self, crops: list) -> dict:
        import torch

        fin = self.predictor.predict(self._stage(crops)).final
        tensors = [getattr(fin, k) for k in OUTPUT_FIELDS]
        flat = torch.cat([t.reshape(len(t), -1).float() for t in tensors], 1).cpu().numpy()
        out, col = {}, 0
        for k, t in zip(OUTPUT_FIELDS, tensors):
            width = int(np.prod(t.shape[1:]))
            out[k] = flat[:, col:col + width].reshape(len(flat), *t.shape[1:])
            col += width
        return out


@dataclass
class Outcome:
    status: str                   # "complete", "cancelled" or "out_of_memory"
    frames_done: int              # frames 0 .. frames_done - 1 have every crop predicted
    timestamps: list              # of the frames handed out by the people stage (>= frames_done)
    message: str = ""


def predict_stream(items, batcher: Batcher, on_outputs: Callable, *, cancel: Callable[[], bool],
                   on_progress: Callable[[int], None]) -> Outcome:
    """Consume ``Finalised`` frames (with crops) in order, predict their crops in batches of
    ``batcher.batch_size`` and pass each batch's entries ``[(frame, TrackBox, square)]`` and
    outputs to ``on_outputs``. Stops after the current batch when ``cancel()``; stops on
    ``OutOfMemory``. Never raises those: the ``Outcome`` says what happened."""
    pending = []   # (frame, TrackBox, square, crop), in frame order
    stamps = []

    def done():
        return pending[0][0] if pending else len(stamps)

    def run_batch():
        n, out = batcher([p[3] for p in pending])
        on_outputs([p[:3] for p in pending[:n]], out)
        del pending[:n]
        on_progress(done())
        if cancel():
            raise Cancelled()

    try:
        for it in items:
            stamps.append(it.timestamp)
            pending.extend((it.index, b, s, c) for b, s, c in zip(it.boxes, it.squares, it.crops))
            while len(pending) >= batcher.batch_size:
                run_batch()
            on_progress(done())
            if cancel():
                raise Cancelled()
        while pending:
            run_batch()
    except Cancelled:
        return Outcome("cancelled", done(), stamps)
    except OutOfMemory as e:
        return Outcome("out_of_memory", done(), stamps, str(e))
    return Outcome("complete", done(), stamps)
