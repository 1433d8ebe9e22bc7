"""The landmark estimator's stage of ``python -m engine run``: frames with final person boxes
in, BlazePose observations per track out; then the fit onto the SMPL-format rig per track.

    Finalised frames (engine/pipeline.py) --> PersonFollower.step per frame --> Observations
    per track --> fit_track per track (engine/fit) --> per-frame records for the result file

The follower needs each person's previous frame, so a person's frames go through the network
in order; the people of one frame share a batch. Decoding and detection still run in their
own threads beside it (engine/pipeline.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from engine.pipeline import Cancelled, Outcome


@dataclass
class TrackObservations:
    """One track's landmark observations on the frames where the model saw the person."""
    frames: list = field(default_factory=list)        # relative frame indices
    observations: list = field(default_factory=list)  # engine.landmarks.landmarker.Observation
    interpolated: list = field(default_factory=list)  # the tracker filled this box across a gap
    masks: list = field(default_factory=list)         # packed crop segmentation (engine/fit/silhouette.py) or None
    missed: int = 0                                   # frames with a box but presence too low

    def arrays(self, upto: int) -> dict:
        """Stacked arrays of the frames < ``upto``: frames (T,), image (T, 33, 2), depth (T, 33),
        visibility (T, 33), world (T, 33, 3), presence (T,), roi (T, 4), interpolated (T,);
        masks: a list of T packed masks or None."""
        keep = [i for i, f in enumerate(self.frames) if f < upto]
        obs = [self.observations[i] for i in keep]
        out = {"frames": np.array([self.frames[i] for i in keep], np.int64),
               "interpolated": np.array([self.interpolated[i] for i in keep], bool),
               "masks": [self.masks[i] for i in keep]}
        for name in ("image", "depth", "visibility", "world", "roi"):
            out[name] = np.stack([getattr(o, name) for o in obs]) if obs else np.zeros((0,))
        out["presence"] = np.array([o.presence for o in obs], np.float64)
        return out


def landmark_stream(items, follower, people, times, *, cancel: Callable[[], bool],
                    on_progress: Callable[[int], None]) -> tuple:
    """Consume ``Finalised`` frames in order; landmarks for every chosen person in each.

    -> (Outcome, {track id: TrackObservations}). Stops after the current frame when
    ``cancel()``; a GPU out-of-memory (one frame's people at once) ends it like the network
    stage does. Never raises those: the Outcome says what happened. A follower that keeps
    the segmentation leaves each large enough person's mask for the silhouette term."""
    import torch

    from engine.fit.silhouette import pack_mask, wants_silhouette

    tracks: dict = {}
    stamps = []
    try:
        for it in items:
            boxes = [b for b in it.boxes if people is None or b.id in people]
            if boxes:
                with times("infer"):
                    seen = follower.step(it.image, [(b.id, b.xyxy) for b in boxes])
                for b in boxes:
                    tr = tracks.setdefault(b.id, TrackObservations())
                    obs = seen.get(b.id)
                    if obs is None:
                        tr.missed += 1
                        continue
                    tr.frames.append(it.index)
                    tr.observations.append(obs)
                    tr.interpolated.append(bool(b.interpolated))
                    seg = follower.segmentation.get(b.id) if follower.keep_segmentation else None
                    mask = None if seg is None else seg > 0
                    tr.masks.append(pack_mask(mask) if mask is not None and wants_silhouette(obs.roi, mask) else None)
            it.image = None
            stamps.append(it.timestamp)
            on_progress(len(stamps))
            if cancel():
                raise Cancelled()
    except Cancelled:
        return Outcome("cancelled", len(stamps), stamps), tracks
    except torch.OutOfMemoryError:
        return Outcome("out_of_memory", len(stamps), stamps,
                       f"{follower.landmarker.device.type} out of memory running the landmark model"), tracks
    return Outcome("complete", len(stamps), stamps), tracks


def fit_records(observed: dict, frames_done: int, focal_px: float, principal_point, body,
                min_frames: int = 1) -> dict:
    """{track id: TrackObservations} -> {track id: [per-frame record]} for ``run.assemble``:
    each track's observations on frames < ``frames_done`` fitted onto the body
    (engine/fit/fit.py). Frames the fit rejects stay gaps. A track is left out when the
    landmark model saw a person in fewer than ``min_frames`` of its frames (the tracker's own
    minimum track length) or is not a person by ``engine.people.verify.is_person`` (the rule
    of the track verifier): on vtest.avi such tracks were detector false positives (a fence,
    a building) where BlazePose now and then imagined a person. A frame that kept the
    person's mask carries it ("mask", "crop_roi") for ``silhouette_refined``."""
    from engine.fit.correspondence import landmark_basis
    from engine.fit.fit import fit_track
    from engine.people.verify import is_person
    from engine.pipeline import log

    basis = landmark_basis(body) if observed else None   # the body's landmark points, once per run
    records = {}
    for tid, tr in sorted(observed.items()):
        a = tr.arrays(frames_done)
        seen, boxes = len(a["frames"]), len(a["frames"]) + tr.missed
        if seen < min_frames or not is_person(seen, boxes):
            log(f"track {tid}: the landmark model saw a person in {seen} of its {boxes} box(es); left out")
            continue
        fit = fit_track(a["world"], a["image"], a["visibility"], a["presence"], focal_px=focal_px,
                        principal_point=principal_point, body=basis)
        recs = []
        for i in np.flatnonzero(fit.valid):
            recs.append({"frame": int(a["frames"][i]), "box": a["roi"][i, :3], "score": float(a["presence"][i]),
                         "interp": bool(a["interpolated"][i]), "rotmat": fit.rotmat[i], "betas": fit.betas,
                         "transl": fit.transl[i],
                         "landmarks2d": np.concatenate([a["image"][i], a["visibility"][i][:, None]], 1),
                         "landmarks3d": a["world"][i], "mask": a["masks"][i], "crop_roi": a["roi"][i]})
        dropped = len(a["frames"]) - len(recs)
        if tr.missed or dropped:
            log(f"track {tid}: {len(recs)} frames fitted; {tr.missed} frame(s) where the landmark model saw no "
                f"person and {dropped} rejected by the fit are gaps")
        if recs:
            records[tid] = recs
    return records


def masked_frames(records: dict) -> int:
    """How many frames of {track id: [record]} kept a mask for ``silhouette_refined``."""
    return sum(r.get("mask") is not None for recs in records.values() for r in recs)


def silhouette_refined(tid, recs: list, rotmat: np.ndarray, transl: np.ndarray, betas, body, camera,
                       cache: dict, cancel=None, on_chunk=None, frame_size=None) -> tuple:
    """A track's stored motion (after smoothing) moved onto the person's masks where its
    records kept one (engine/fit/silhouette.py): refined last, so that what the file holds
    (and the mattes made from it) is what was fitted to the plate.

    recs: the track's records ("mask", "crop_roi"); rotmat (T, 24, 3, 3), transl (T, 3) as
    stored; betas (B,): the track's rest shape; body: ``BodyModelData``; camera: (focal px,
    principal point (2,)); cache: a dict kept across tracks (the surface points); cancel,
    on_chunk, frame_size: as ``refine_track``'s. -> (rotmat, transl) float64, unchanged where a frame has
    no mask (or was not reached before a cancel)."""
    from engine.fit.fit import make_rig
    from engine.fit.silhouette import SilhouetteParams, refine_track, surface_basis
    from engine.pipeline import log

    masks = [r.get("mask") for r in recs]
    if all(m is None for m in masks):
        return rotmat, transl
    params = SilhouetteParams()
    if "surface" not in cache:
        cache["surface"] = surface_basis(body, params.points)
    T = len(recs)
    R, t = rotmat.astype(np.float32), transl.astype(np.float32)
    rois = np.stack([np.asarray(r["crop_roi"], np.float64) for r in recs])
    done = refine_track(R, t, make_rig(cache["surface"], betas), masks, rois, np.full(T, float(camera[0])),
                        np.tile(np.asarray(camera[1], np.float64), (T, 1)), params, cancel, on_chunk,
                        np.array([r["frame"] for r in recs]), frame_size)
    rotmat, transl = rotmat.copy(), transl.copy()
    rotmat[done], transl[done] = R[done], t[done]
    wanted = sum(m is not None for m in masks)
    log(f"track {tid}: {int(done.sum())} frame(s) refined to the person's silhouette"
        + (f"; cancelled, {wanted - int(done.sum())} keep the fit's pose" if done.sum() < wanted else ""))
    return rotmat, transl
