"""Temporal smoothing of per-frame SMPL estimates (numpy only; safe inside Blender).

The filter is the One-Euro filter (Casiez, Roussel, Vogel, CHI 2012): an exponential
moving average whose cutoff rises with the signal's speed,

    cutoff = min_cutoff + beta * |filtered derivative|,

so slow motion (where jitter is most visible) is smoothed hard and fast motion is
followed with little lag or loss of amplitude.

Rotations are filtered on the rotation group, not on their coordinates: each step moves
the filtered rotation towards the measurement along the geodesic (log map of the
difference, scaled, exp map back). See ``smooth_quaternions`` for why.

Units: ``min_cutoff`` and ``d_cutoff`` are in Hz; ``beta`` is in 1 / (signal unit per
second), i.e. per rad/s for rotations and per m/s for translation. Timestamps are in
seconds; wherever a timestamp array is expected a scalar is read as a frame rate (fps).

``python -m engine.common.smoothing --measure`` reproduces the figures in
docs/smoothing.md (synthetic motion with known truth).
"""
import argparse
from dataclasses import dataclass

import numpy as np

from .rotations import (
    axis_angle_to_quat,
    normalize_quat,
    quat_conjugate,
    quat_make_continuous,
    quat_multiply,
    quat_to_axis_angle,
    quat_to_rotmat,
    rotmat_to_quat,
)


# --------------------------------------------------------------------------- parameters

@dataclass(frozen=True)
class SmoothingParams:
    """One-Euro parameters. ``min_cutoff = inf`` disables the filter (output = input)."""
    min_cutoff: float = 1.0   # Hz, cutoff when the signal is still
    beta: float = 5.0         # Hz per (unit/s): how fast the cutoff opens with speed
    d_cutoff: float = 1.0     # Hz, smoothing of the speed estimate itself
    zero_phase: bool = True   # offline: average a forward and a backward pass (no lag)

    @property
    def is_identity(self):
        return not np.isfinite(self.min_cutoff)


# VIBE (Kocabas et al. 2020) runs One-Euro with these on SMPL axis-angle, component-wise.
# Axis-angle is the wrong space for that: it is not a vector space (two nearby rotations
# near angle pi have opposite axis-angle vectors; the filter then averages through the
# identity), components are coupled non-linearly, and the per-component speed depends on
# which way the joint's axis points. We keep the numbers only as a reference setting.
VIBE = SmoothingParams(min_cutoff=0.004, beta=0.7, d_cutoff=1.0, zero_phase=False)

PRESETS = {
    "none": SmoothingParams(min_cutoff=np.inf, beta=0.0),
    # Chosen with ``--measure`` (docs/smoothing.md): "default" removes ~70% of the noise
    # jitter and keeps > 95% of a 2.5 Hz, +-35 deg kick. beta is large because the
    # speed is in rad/s and noise-free poses need the cutoff wide open during a swing.
    "light": SmoothingParams(min_cutoff=2.0, beta=10.0),
    "default": SmoothingParams(min_cutoff=1.0, beta=5.0),
    "strong": SmoothingParams(min_cutoff=0.5, beta=2.0),
}

# Strength slider anchors: s -> (min_cutoff, beta), interpolated log-linearly in
# min_cutoff and linearly in beta. s = 0 is exactly "none"; just above 0 the cutoff is
# so high (alpha ~ 0.97 at 30 fps) that the output is visually the input.
_STRENGTH_ANCHORS = (
    (0.0, 150.0, PRESETS["light"].beta),
    (1 / 3, PRESETS["light"].min_cutoff, PRESETS["light"].beta),
    (2 / 3, PRESETS["default"].min_cutoff, PRESETS["default"].beta),
    (1.0, PRESETS["strong"].min_cutoff, PRESETS["strong"].beta),
)


def params_for_strength(s):
    """Slider value s in [0, 1] -> SmoothingParams; smoothing grows monotonically with s.

    0 is "none", 1/3 "light", 2/3 "default", 1 "strong". Both min_cutoff and beta are
    non-increasing in s, so the cutoff (hence the smoothing) is monotone at every speed.
    """
    s = float(np.clip(s, 0.0, 1.0))
    if s == 0.0:
        return PRESETS["none"]
    xs = [a[0] for a in _STRENGTH_ANCHORS]
    log_mc = np.interp(s, xs, [np.log(a[1]) for a in _STRENGTH_ANCHORS])
    beta = np.interp(s, xs, [a[2] for a in _STRENGTH_ANCHORS])
    return SmoothingParams(min_cutoff=float(np.exp(log_mc)), beta=float(beta))


# --------------------------------------------------------------------------- core filter

def _timestamps(timestamps, T):
    """Scalar fps or (T,) seconds -> (T,) float64 strictly increasing seconds."""
    t = np.asarray(timestamps, dtype=np.float64)
    if t.ndim == 0:
        if not t > 0:
            raise ValueError("fps must be positive")
        return np.arange(T, dtype=np.float64) / t
    if t.shape != (T,):
        raise ValueError(f"timestamps must have shape ({T},), got {t.shape}")
    if T > 1 and not np.all(np.diff(t) > 0):
        raise ValueError("timestamps must be strictly increasing")
    return t


def _alpha(cutoff, dt):
    """EMA weight of the new sample for a first-order low-pass at ``cutoff`` Hz."""
    tau = 1.0 / (2 * np.pi * cutoff)  # cutoff = inf -> tau = 0 -> alpha = 1 (pass-through)
    return 1.0 / (1.0 + tau / dt)


def _one_euro_pass(x, t, p, vector):
    """One causal One-Euro pass. x (T, ...), t (T,) increasing -> (T, ...) float64."""
    out = np.empty_like(x)
    x_hat = x[0].copy()
    dx_hat = np.zeros_like(x_hat)
    out[0] = x_hat
    for i in range(1, len(x)):
        dt = t[i] - t[i - 1]
        # Speed from the raw sample vs the previous *output* (Casiez et al.'s reference code).
        dx = (x[i] - x_hat) / dt
        dx_hat += _alpha(p.d_cutoff, dt) * (dx - dx_hat)
        speed = np.linalg.norm(dx_hat, axis=-1, keepdims=True) if vector else np.abs(dx_hat)
        x_hat += _alpha(p.min_cutoff + p.beta * speed, dt) * (x[i] - x_hat)
        out[i] = x_hat
    return out


def _params(params, min_cutoff, beta, d_cutoff, zero_phase):
    p = PRESETS["default"] if params is None else params
    if isinstance(p, str):
        p = PRESETS[p]
    kw = {k: v for k, v in dict(min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff,
                                zero_phase=zero_phase).items() if v is not None}
    return SmoothingParams(**{**p.__dict__, **kw})


def one_euro(x, timestamps, min_cutoff=None, beta=None, d_cutoff=None, zero_phase=None,
             params=None, vector=False):
    """One-Euro filter along time. x (T, ...) -> (T, ...) float64.

    timestamps: (T,) seconds (any spacing: variable frame rate is fine) or a scalar fps.
    Explicit min_cutoff / beta / d_cutoff / zero_phase override ``params`` (a
    SmoothingParams or preset name; default preset "default").
    vector=False filters every trailing element independently (the paper's scalar
    filter); vector=True gives each vector along the last axis one cutoff from the
    norm of its velocity, so the result does not depend on the coordinate axes.

    zero_phase=True averages the causal pass with a pass run backwards in time over the
    *raw* input. The causal pass lags by about tau, the backward one leads by tau, so the
    mean has no lag; for a fixed cutoff the response is Re(H) = |H|^2, the same as running
    the filter twice (filtfilt). We average rather than re-filter the forward output so
    the backward pass sees the true speed (a second pass over smoothed data would
    under-estimate speed, close the cutoff and flatten fast swings).
    """
    p = _params(params, min_cutoff, beta, d_cutoff, zero_phase)
    x = np.array(x, dtype=np.float64)
    t = _timestamps(timestamps, len(x))
    if p.is_identity or len(x) < 2:
        return x
    fwd = _one_euro_pass(x, t, p, vector)
    if not p.zero_phase:
        return fwd
    bwd = _one_euro_pass(x[::-1], -t[::-1], p, vector)[::-1]
    return 0.5 * (fwd + bwd)


# --------------------------------------------------------------------------- rotations

def _quat_pass(q, t, p):
    """Causal One-Euro on the rotation group. q (T, J, 4) continuous -> (T, J, 4)."""
    out = np.empty_like(q)
    q_hat = q[0].copy()
    w_hat = np.zeros(q.shape[1:-1] + (3,))  # filtered angular velocity (rad/s, local frame)
    out[0] = q_hat
    for i in range(1, len(q)):
        dt = t[i] - t[i - 1]
        # Log map of the measurement relative to the previous output: the rotation vector
        # (shortest way, |.| <= pi) that takes q_hat to q[i].
        delta = quat_to_axis_angle(quat_multiply(quat_conjugate(q_hat), q[i]))
        w_hat += _alpha(p.d_cutoff, dt) * (delta / dt - w_hat)
        speed = np.linalg.norm(w_hat, axis=-1, keepdims=True)
        a = _alpha(p.min_cutoff + p.beta * speed, dt)
        # Exp map back: step a fraction a along the geodesic (slerp by a).
        q_hat = normalize_quat(quat_multiply(q_hat, axis_angle_to_quat(a * delta)))
        out[i] = q_hat
    return out


def smooth_quaternions(q, timestamps, params=None):
    """Smooth rotations given as quaternions. q (T, J, 4) (w, x, y, z) -> (T, J, 4) unit.

    Why a tangent-space (geodesic) filter rather than filtering the 4 components and
    renormalising: the step is an exact slerp, so outputs are unit by construction and
    each step takes the short way; the speed that opens the cutoff is the angular speed
    |omega| (rad/s), which does not depend on how the joint's axes are oriented, whereas
    per-component speeds do; and large per-frame steps (fast kicks, low fps) are not
    shortened by the chord-vs-arc error of component averaging.

    Input signs may flip arbitrarily (q and -q are the same rotation): they are aligned
    first, and the output is sign-continuous over time, starting on q[0]'s hemisphere.
    """
    p = _params(params, None, None, None, None)
    q = quat_make_continuous(normalize_quat(np.array(q, dtype=np.float64)), axis=0)
    t = _timestamps(timestamps, len(q))
    if p.is_identity or len(q) < 2:
        return q
    fwd = _quat_pass(q, t, p)
    if not p.zero_phase:
        return fwd
    bwd = _quat_pass(q[::-1], -t[::-1], p)[::-1]
    # Midpoint of the two (both start on q's hemisphere, but align to be safe).
    bwd = np.where(np.sum(fwd * bwd, axis=-1, keepdims=True) < 0, -bwd, bwd)
    return quat_make_continuous(normalize_quat(fwd + bwd), axis=0)


def smooth_rotmats(R, timestamps, params=None):
    """Rotation matrices (T, J, 3, 3) -> smoothed (T, J, 3, 3) via smooth_quaternions."""
    return quat_to_rotmat(smooth_quaternions(rotmat_to_quat(R), timestamps, params))


# --------------------------------------------------------------------------- other tracks

def smooth_translation(t, timestamps, params=None):
    """Root translation (T, 3) metres -> (T, 3); one cutoff per frame from |velocity|."""
    return one_euro(t, timestamps, params=params, vector=True)


# Body shape does not change over a track: smooth it hard and without speed adaptation.
BETAS_PARAMS = SmoothingParams(min_cutoff=0.1, beta=0.0, zero_phase=True)


def smooth_betas(b, timestamps, params=None):
    """Shape coefficients (T, 10) -> (T, 10), heavily low-passed (default BETAS_PARAMS)."""
    return one_euro(b, timestamps, params=BETAS_PARAMS if params is None else params)


def robust_betas(b):
    """Shape coefficients (T, 10) -> (10,): per-coefficient median over the track.

    One constant shape per person; the median ignores the few frames where the
    estimate is wild (occlusion, truncation) that a mean or low-pass would smear in.
    """
    return np.median(np.asarray(b, dtype=np.float64), axis=0)


def track_segments(frames, max_gap):
    """Frame indices (T,) increasing -> list of (start, stop) slices split where the
    step between consecutive detections exceeds ``max_gap`` frames."""
    frames = np.asarray(frames)
    if frames.ndim != 1:
        raise ValueError("frames must be 1-D")
    if len(frames) > 1 and not np.all(np.diff(frames) > 0):
        raise ValueError("frames must be strictly increasing")
    cuts = np.flatnonzero(np.diff(frames) > max_gap) + 1
    bounds = np.concatenate([[0], cuts, [len(frames)]])
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def smooth_track(frames, x, fps, params=None, max_gap=5, smoother=None):
    """Smooth one person's track that may miss frames. frames (T,) int, x (T, ...).

    Short gaps (<= max_gap missing-to-next steps) are bridged: timestamps are frames / fps,
    so the filter sees the real elapsed time. Across a longer gap the filter restarts,
    so a person who reappears elsewhere is not dragged from where they vanished.
    smoother(x_segment, timestamps, params) defaults to smooth_quaternions for (..., 4)
    quaternion input, smooth_rotmats for (..., 3, 3), else smooth_translation /
    one_euro. Returns (T, ...).
    """
    x = np.asarray(x, dtype=np.float64)
    frames = np.asarray(frames)
    if len(frames) != len(x):
        raise ValueError("frames and x must have the same length")
    if smoother is None:
        if x.ndim >= 3 and x.shape[-2:] == (3, 3):
            smoother = smooth_rotmats
        elif x.ndim == 3 and x.shape[-1] == 4:
            smoother = smooth_quaternions
        elif x.ndim == 2 and x.shape[-1] == 3:
            smoother = smooth_translation
        else:
            def smoother(seg, ts, prm):
                return one_euro(seg, ts, params=prm)
    out = np.empty_like(x)
    t = frames.astype(np.float64) / fps
    for a, b in track_segments(frames, max_gap):
        out[a:b] = smoother(x[a:b], t[a:b], params)
    return out


# --------------------------------------------------------------------------- measurement

FPS = 30.0
# (joint, axis, amplitude deg (peak, i.e. +-A), frequency Hz). Everything else sways gently.
SWINGS = {
    "arm swing": (16, (0.0, 0.0, 1.0), 30.0, 1.0),   # 60 deg peak-to-peak at 1 Hz
    "kick": (4, (1.0, 0.0, 0.0), 35.0, 2.5),          # knee, 70 deg peak-to-peak at 2.5 Hz
    "torso turn": (3, (0.0, 1.0, 0.0), 20.0, 0.2),
}


def synthetic_motion(seconds=6.0, fps=FPS, rot_noise_deg=4.0, trans_noise_m=0.015, seed=0):
    """Known-truth motion plus noise, for measuring filters.

    Returns dict: t (T,), q_true / q_noisy (T, 24, 4), trans_true / trans_noisy (T, 3).
    Each joint is a fixed random rest rotation times a sinusoidal swing about a fixed
    axis; noise is a random rotation whose RMS angle is ``rot_noise_deg``.
    """
    rng = np.random.default_rng(seed)
    T, J = int(round(seconds * fps)), 24
    t = np.arange(T) / fps
    rest = axis_angle_to_quat(rng.normal(scale=0.4, size=(J, 3)))
    axes = rng.normal(size=(J, 3))
    amps = np.deg2rad(rng.uniform(3.0, 12.0, size=J))
    freqs = rng.uniform(0.2, 0.6, size=J)
    phases = rng.uniform(0, 2 * np.pi, size=J)
    for j, axis, amp, f in SWINGS.values():
        axes[j], amps[j], freqs[j] = axis, np.deg2rad(amp), f
    axes /= np.linalg.norm(axes, axis=-1, keepdims=True)
    angle = amps * np.sin(2 * np.pi * freqs * t[:, None] + phases)        # (T, J)
    q_true = quat_multiply(rest, axis_angle_to_quat(angle[..., None] * axes))
    noise = rng.normal(scale=np.deg2rad(rot_noise_deg) / np.sqrt(3), size=(T, J, 3))
    q_noisy = quat_multiply(q_true, axis_angle_to_quat(noise))
    # Walk forward at 1 m/s with a 3 cm vertical bob at step frequency (2 Hz).
    trans_true = np.stack([np.zeros(T), 0.9 + 0.03 * np.sin(2 * np.pi * 2.0 * t), 1.0 * t], -1)
    trans_noisy = trans_true + rng.normal(scale=trans_noise_m, size=trans_true.shape)
    return dict(t=t, q_true=q_true, q_noisy=q_noisy, rest=rest, axes=axes, freqs=freqs,
                trans_true=trans_true, trans_noisy=trans_noisy)


def angular_velocity(q):
    """q (T, ..., 4) -> per-frame rotation vectors (T-1, ..., 3), degrees per frame."""
    return np.rad2deg(quat_to_axis_angle(quat_multiply(quat_conjugate(q[:-1]), q[1:])))


def jitter(q):
    """Mean angular acceleration magnitude, deg/frame^2. q (T, J, 4) -> (J,)."""
    return np.linalg.norm(np.diff(angular_velocity(q), axis=0), axis=-1).mean(axis=0)


def angular_error(q, q_ref):
    """Geodesic angle between rotations, degrees. (..., 4) x (..., 4) -> (...)."""
    return np.linalg.norm(np.rad2deg(quat_to_axis_angle(quat_multiply(quat_conjugate(q_ref), q))),
                          axis=-1)


def swing_amplitude(q, rest, axis, freq, t):
    """Fitted amplitude (deg) of the swing at ``freq`` about ``axis``. q (T, 4) -> float.

    The swing angle is read off the rotation relative to the rest pose, projected on
    the axis; a least-squares sine+cosine fit at the known frequency measures its
    amplitude without the bias that noise adds to a raw peak-to-peak.
    """
    rel = quat_to_axis_angle(quat_multiply(quat_conjugate(rest), q)) @ np.asarray(axis)
    A = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t), np.ones_like(t)], -1)
    coef = np.linalg.lstsq(A, rel, rcond=None)[0]
    return float(np.rad2deg(np.hypot(coef[0], coef[1])))


def evaluate(params, data=None):
    """Figures for one setting on ``synthetic_motion``; a dict of floats (see docs)."""
    d = synthetic_motion() if data is None else data
    q = smooth_quaternions(d["q_noisy"], FPS, params)
    j_true, j_in, j_out = jitter(d["q_true"]), jitter(d["q_noisy"]), jitter(q)
    # Share of the *excess* (noise) jitter removed: 100% = as smooth as the truth.
    removed = 100 * (1 - (j_out - j_true) / (j_in - j_true))
    res = dict(jitter=j_out.mean(), jitter_true=j_true.mean(), jitter_in=j_in.mean(),
               removed=100 * (1 - (j_out.mean() - j_true.mean()) / (j_in.mean() - j_true.mean())),
               err=angular_error(q, d["q_true"]).mean(),
               err_in=angular_error(d["q_noisy"], d["q_true"]).mean())
    for name, (j, axis, amp, f) in SWINGS.items():
        true_amp = swing_amplitude(d["q_true"][:, j], d["rest"][j], axis, f, d["t"])
        out_amp = swing_amplitude(q[:, j], d["rest"][j], axis, f, d["t"])
        res[f"loss {name}"] = 100 * (1 - out_amp / true_amp)
        res[f"removed {name}"] = removed[j]
    tr = smooth_translation(d["trans_noisy"], FPS, params)
    res["trans_err_cm"] = 100 * np.linalg.norm(tr - d["trans_true"], axis=-1).mean()
    res["trans_err_in_cm"] = 100 * np.linalg.norm(d["trans_noisy"] - d["trans_true"], axis=-1).mean()
    return res


def measurement_settings():
    """(label, SmoothingParams) rows of the measurement table."""
    rows = [("none", PRESETS["none"]),
            ("VIBE (0.004, 0.7), causal", VIBE),
            ("VIBE (0.004, 0.7), zero-phase", SmoothingParams(0.004, 0.7, zero_phase=True))]
    for name in ("light", "default", "strong"):
        p = PRESETS[name]
        rows.append((f"**{name}** ({p.min_cutoff:g}, {p.beta:g}), zero-phase", p))
    rows.append(("default params, causal", SmoothingParams(PRESETS["default"].min_cutoff,
                                                           PRESETS["default"].beta,
                                                           zero_phase=False)))
    for mc in (0.5, 1.0, 2.0):
        for beta in (0.7, 2.0, 5.0, 10.0):
            rows.append((f"grid ({mc:g}, {beta:g}), zero-phase", SmoothingParams(mc, beta)))
    return rows


def measure_table():
    """Markdown table of ``evaluate`` over ``measurement_settings``."""
    d = synthetic_motion()
    head = ("| setting (min_cutoff Hz, beta) | jitter deg/frame² (truth {jt:.2f}) | jitter removed % "
            "| removed on kick % | amp. lost arm 1 Hz % | amp. lost kick 2.5 Hz % "
            "| amp. lost torso 0.2 Hz % | mean error to truth deg | transl. error cm |")
    lines = []
    for label, p in measurement_settings():
        r = evaluate(p, d)
        if not lines:
            lines = [head.format(jt=r["jitter_true"]), "|" + "---|" * 9]
        lines.append(f"| {label} | {r['jitter']:.2f} | {r['removed']:.0f} | {r['removed kick']:.0f} "
                     f"| {r['loss arm swing']:.1f} | {r['loss kick']:.1f} | {r['loss torso turn']:.1f} "
                     f"| {r['err']:.2f} | {r['trans_err_cm']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--measure", action="store_true", help="print the synthetic-motion table")
    args = ap.parse_args(argv)
    if args.measure:
        print(measure_table())
    else:
        ap.print_help()


if __name__ == "__main__":
    main()
