"""Evaluation of a checkpoint on a fixed held-out synthetic set.

    python -m engine.evaluate --checkpoint PATH --report DIR [--count N] [--seed S]
        [--device auto] [--batch-size B] [--examples K] [--workers W] [--body SMPL]

The held-out set is ``SyntheticPeople`` with seed ``EVAL_SEED`` (distinct from every
training data seed; the trainer refuses it). Metrics (``engine.train.metrics``) for the
mean-parameter start M0 and every stage M1..M3 (the final stage is the headline):

* MPJPE and PA-MPJPE (mm) on the 14 LSP joints, pelvis (mid-hip) aligned;
* PVE (mm) on the meshes (ground truth = the body model posed with the sample's pose
  and shape, both without translation);
* silhouette accuracy / F1 and six-part accuracy / mean F1 of the predicted mesh
  rendered with the crop camera at the label resolution (56 px) against the sample's
  silhouette and IUV part labels (only samples with ``has_iuv``); unavailable, and said
  so, when no EGL renderer can be created.

Two checks that a constant predictor cannot pass as learning:

* the mean-pose baseline: MPJPE / PA-MPJPE / PVE of predicting, for every sample, one
  constant body = the mean over the evaluated set of the ground-truth joints (pelvis
  aligned, as the metrics) and vertices;
* the prediction spread: mean over samples of the distance (mm, mean over the LSP joints)
  of the final stage's pelvis-aligned joints to their mean over the set, next to the same
  for the ground truth (which equals the baseline's MPJPE). A network that ignores its
  input has a spread near 0 and errors near the baseline's.

``DIR`` receives ``report.md`` (tables), ``metrics.json`` (the numbers; null where
unavailable) and ``example_<i>.png`` (input crop, then the mesh over the crop after
each stage).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from engine.model.inference import AUTOCAST_DTYPES, resolve_device
from engine.train.configs import EVAL_SEED
from engine.train.data import collate_tensors, synthetic_dataset
from engine.train.losses import batch_to_tensors
from engine.train.metrics import (SegmentationScores, joint_errors, lsp14_pelvis_aligned, mpjpe, pa_mpjpe,
                                  pve, render_labels, six_part_labels)

STAGE_KEYS = ("mpjpe", "pa_mpjpe", "pve", "silhouette_acc", "silhouette_f1", "parts_acc", "parts_f1")
LABELS = {"mpjpe": "MPJPE (mm)", "pa_mpjpe": "PA-MPJPE (mm)", "pve": "PVE (mm)",
          "silhouette_acc": "silhouette accuracy", "silhouette_f1": "silhouette F1",
          "parts_acc": "6-part accuracy", "parts_f1": "6-part mean F1"}
BASELINE_KEYS = ("mpjpe", "pa_mpjpe", "pve")
BASELINE_NAME = "mean-pose baseline"


def held_out_dataset(count: int, seed: int = EVAL_SEED, body=None, cache_dir=None):
    """The held-out synthetic set (``count`` samples of seed ``seed``)."""
    return synthetic_dataset(seed, count, body, cache_dir)


def _forward(model, crops, autocast_dtype):
    return model(crops, full_mesh_every_stage=True, run_iuv=False, autocast_dtype=autocast_dtype,
                 with_initial=True)


def _stages(model, out) -> list:
    """[(name, StageOutput with vertices)] for M0 (if present) and M1..Mn."""
    stages = ([("M0", out.initial)] if out.initial is not None else [])
    stages += [(f"M{t}", s) for t, s in enumerate(out.stages, start=1)]
    smpl = model.regressor[0].smpl
    for _, s in stages:
        if s.vertices is None:
            s.vertices = smpl.pose(s.rotmat, s.betas).vertices
    return stages


# --- constant-predictor checks ----------------------------------------------------------
def _cat(chunks: list, *empty_shape) -> torch.Tensor:
    return torch.cat(chunks) if chunks else torch.zeros(empty_shape)


def spread(points: torch.Tensor) -> float:
    """How much a set of bodies varies: mean over samples of the mean distance of a
    sample's points to the set's mean points. (N, K, 3) -> float, input unit; 0 for a
    constant set."""
    if not len(points):
        return math.nan
    centre = points.mean(dim=0, keepdim=True).expand_as(points)
    return float(mpjpe(points, centre).mean())


def mean_pose_baseline(gt14: torch.Tensor, rotmat: torch.Tensor, betas: torch.Tensor, smpl,
                       batch_size: int = 64) -> dict:
    """Errors (mm, means over the set) of predicting one constant body for every sample:
    the mean ground truth.

    gt14 (N, 14, 3) pelvis-aligned evaluation joints (m); rotmat (N, 24, 3, 3) and betas
    (N, 10) the ground-truth parameters, posed with ``smpl`` (no translation, as ``pve``)
    -> {'mpjpe', 'pa_mpjpe', 'pve'}. The vertices are posed twice (mean, then errors)
    rather than kept: 83 KB a sample would grow with the set.
    """
    if not len(gt14):
        return {k: math.nan for k in BASELINE_KEYS}
    gt14 = gt14.double()
    mean14 = gt14.mean(dim=0, keepdim=True).expand_as(gt14)
    device = smpl.v_template.device
    chunks = [(rotmat[i:i + batch_size].to(device), betas[i:i + batch_size].to(device))
              for i in range(0, len(rotmat), batch_size)]
    total = sum(smpl.pose(r, b).vertices.double().sum(dim=0) for r, b in chunks)
    mean_vertices = (total / len(rotmat)).float()
    vertex_errors = torch.cat([pve(mean_vertices.expand(len(r), -1, -1), smpl.pose(r, b).vertices)
                               for r, b in chunks])
    return {"mpjpe": 1000 * float(mpjpe(mean14, gt14).mean()),
            "pa_mpjpe": 1000 * float(pa_mpjpe(mean14, gt14).mean()),
            "pve": 1000 * float(vertex_errors.double().mean())}


@torch.no_grad()
def evaluate_model(model, dataset, *, indices=None, batch_size: int = 16, device=None, renderer=None,
                   label_size: int = 56, autocast: str = "none", num_workers: int = 0) -> dict:
    """All metrics of ``model`` on ``dataset[indices]``.

    renderer: an ``engine.render.renderer.Renderer`` of ``label_size`` px for the
    silhouette / part metrics (None: those are NaN). Returns {'count', metric: final-stage
    value, 'stages': {'M0'..'M3': {metric: value}}, 'baseline': {'mpjpe', 'pa_mpjpe',
    'pve'} of the mean pose, 'prediction_spread', 'gt_spread'}; 3D errors in mm.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    indices = list(range(len(dataset)) if indices is None else indices)
    batches = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    kwargs = {"multiprocessing_context": "spawn"} if num_workers > 0 else {}
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=collate_tensors, **kwargs)
    autocast_dtype = AUTOCAST_DTYPES[autocast]
    errors: dict = {}
    sil: dict = {}
    parts: dict = {}
    smpl = model.regressor[0].smpl
    gt14, pred14, gt_rotmat, gt_betas = [], [], [], []  # for the baseline and the spreads
    for batch in loader:
        batch = batch_to_tensors(batch, device)
        out = _forward(model, model.prepare_crops(batch["image"]), autocast_dtype)
        gt_vertices = smpl.pose(batch["pose_rotmat"].float(), batch["betas"].float()).vertices
        with_iuv = (batch["has_iuv"] > 0.5).cpu().numpy()
        if renderer is not None and with_iuv.any():
            gt_sil = batch["silhouette"].cpu().numpy()[with_iuv] > 0
            gt_parts = six_part_labels(batch["iuv"][:, 0].cpu().numpy()[with_iuv])
        outputs = _stages(model, out)
        gt14.append(lsp14_pelvis_aligned(batch["joints3d"].float()).cpu())
        pred14.append(lsp14_pelvis_aligned(outputs[-1][1].joints3d.float()).cpu())
        gt_rotmat.append(batch["pose_rotmat"].float().cpu())
        gt_betas.append(batch["betas"].float().cpu())
        for name, stage in outputs:
            e = errors.setdefault(name, {"mpjpe": [], "pa_mpjpe": [], "pve": []})
            j = joint_errors(stage.joints3d.float(), batch["joints3d"].float())
            e["mpjpe"].append(1000 * j["mpjpe"].cpu().numpy())
            e["pa_mpjpe"].append(1000 * j["pa_mpjpe"].cpu().numpy())
            e["pve"].append(1000 * pve(stage.vertices.float(), gt_vertices).cpu().numpy())
            if renderer is not None and with_iuv.any():
                keep = torch.as_tensor(with_iuv, device=stage.vertices.device)
                mask, part25 = render_labels(renderer, stage.vertices[keep], stage.cam[keep], label_size)
                sil.setdefault(name, SegmentationScores(2)).update(mask, gt_sil)
                parts.setdefault(name, SegmentationScores(7)).update(six_part_labels(part25), gt_parts)
    gt14, pred14 = _cat(gt14, 0, 14, 3), _cat(pred14, 0, 14, 3)
    baseline = mean_pose_baseline(gt14, _cat(gt_rotmat, 0, 24, 3, 3), _cat(gt_betas, 0, 10), smpl, batch_size)
    if was_training:
        model.train()

    stages = {}
    for name, e in errors.items():
        row = {k: float(np.mean(np.concatenate(v))) for k, v in e.items()}
        s, p = sil.get(name), parts.get(name)
        row.update({"silhouette_acc": s.accuracy if s else math.nan, "silhouette_f1": s.f1 if s else math.nan,
                    "parts_acc": p.accuracy if p else math.nan, "parts_f1": p.f1 if p else math.nan})
        stages[name] = row
    final = list(stages)[-1] if stages else None
    results = {"count": len(indices), "final_stage": final, "stages": stages, "baseline": baseline,
               "prediction_spread": 1000 * spread(pred14.double()), "gt_spread": 1000 * spread(gt14.double())}
    results.update(stages[final] if final else {k: math.nan for k in STAGE_KEYS})
    return results


# --- examples --------------------------------------------------------------------------
@torch.no_grad()
def render_examples(model, dataset, indices, renderer224, out_dir, device=None) -> list:
    """PNG per sample: input crop | mesh over the crop after each stage. -> paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from engine.train.metrics import crop_camera

    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    paths = []
    for i in indices:
        batch = batch_to_tensors(collate_tensors([dataset[i]]), device)
        out = _forward(model, model.prepare_crops(batch["image"]), None)
        image = batch["image"][0].cpu().numpy()
        panels = [("input", image)]
        if renderer224 is not None:
            for name, stage in _stages(model, out):
                translation, focal, principal = crop_camera(stage.cam.float(), 224)
                verts = (stage.vertices.float() + translation[:, None]).cpu().numpy()
                panels.append((name, renderer224.render_overlay(image, verts[0], focal,
                                                                principal=principal[0].cpu().numpy())))
        fig = Figure(figsize=(2.2 * len(panels), 2.5))
        FigureCanvasAgg(fig)
        for k, (title, img) in enumerate(panels):
            ax = fig.add_subplot(1, len(panels), k + 1)
            ax.imshow(img)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        fig.tight_layout()
        path = Path(out_dir) / f"example_{i}.png"
        fig.savefig(path, dpi=100)
        paths.append(path)
    return paths


# --- report ----------------------------------------------------------------------------
def _fmt(key: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.1f}" if key in ("mpjpe", "pa_mpjpe", "pve") else f"{value:.4f}"


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def spread_line(results: dict) -> str:
    """'prediction spread 5.8 mm vs ground truth 236.5 mm' (final stage, pelvis-aligned LSP joints)."""
    return (f"prediction spread {_fmt('mpjpe', results.get('prediction_spread'))} mm vs ground truth "
            f"{_fmt('mpjpe', results.get('gt_spread'))} mm")


def constant_predictor_warnings(results: dict, min_spread_ratio: float = 0.25) -> list:
    """Why the final stage may not have learned anything: no better than the mean pose, or
    nearly the same body for every input. -> list of sentences (empty when neither)."""
    warnings = []
    final, base = results.get("mpjpe", math.nan), results.get("baseline", {}).get("mpjpe", math.nan)
    # within float32 rounding of the baseline is no better (the mean body itself scores the
    # baseline to about 1e-5 mm, on either side); False when either is NaN
    if final >= base - 1e-3:
        warnings.append(f"the final stage is no better than the mean-pose baseline (MPJPE {_fmt('mpjpe', final)} "
                        f"vs {_fmt('mpjpe', base)} mm)")
    pred, gt = results.get("prediction_spread", math.nan), results.get("gt_spread", math.nan)
    if pred < min_spread_ratio * gt:
        warnings.append(f"the predictions barely vary ({spread_line(results)}): the network gives nearly "
                        f"the same body for every input")
    return warnings


def write_report(results: dict, report_dir, *, header: dict, examples: list = ()) -> Path:
    """report.md + metrics.json in ``report_dir``."""
    report_dir = Path(report_dir)
    baseline = results.get("baseline", {})
    lines = ["# PyMAF evaluation", ""]
    lines += [f"- **{k}**: {v}" for k, v in header.items()]
    lines += ["", f"## Final stage ({results.get('final_stage')})", "",
              f"| metric | value | {BASELINE_NAME} |", "|---|---|---|"]
    lines += [f"| {LABELS[k]} | {_fmt(k, results.get(k))} | {_fmt(k, baseline.get(k))} |" for k in STAGE_KEYS]
    lines += ["", f"The {BASELINE_NAME} predicts one constant body for every sample: the mean ground-truth "
              "joints (pelvis aligned) and vertices of the evaluated set.", "",
              f"Final stage {spread_line(results)} (mean distance of each sample's pelvis-aligned LSP joints "
              "to their mean over the set; a constant prediction has 0)."]
    for warning in constant_predictor_warnings(results):
        lines += ["", f"**Warning:** {warning}."]
    lines += ["", "## Per stage (M0 = mean-parameter start)", "",
              "| stage | " + " | ".join(LABELS[k] for k in STAGE_KEYS) + " |",
              "|---|" + "---|" * len(STAGE_KEYS)]
    for name, row in list(results["stages"].items()) + [(BASELINE_NAME, baseline)]:
        lines.append(f"| {name} | " + " | ".join(_fmt(k, row.get(k)) for k in STAGE_KEYS) + " |")
    if examples:
        lines += ["", "## Examples (input crop, then the mesh after each stage)", ""]
        lines += [f"![{Path(p).stem}]({Path(p).name})" for p in examples]
    (report_dir / "report.md").write_text("\n".join(lines) + "\n")
    payload = {"header": header, **results}
    (report_dir / "metrics.json").write_text(json.dumps(_jsonable(payload), indent=2))
    return report_dir / "report.md"


def make_renderer(body, size: int):
    """A Renderer for ``body`` (parts/UV from ``with_surface`` when it has none), or
    (None, reason) when no EGL context can be made."""
    try:
        from engine.render.renderer import Renderer
        from engine.render.surface import with_surface

        if body.vertex_parts is None:
            body = with_surface(body)
        return Renderer(size, size, body.faces, body.vertex_parts, body.vertex_uv), ""
    except Exception as exc:  # noqa: BLE001 - no EGL, no moderngl, ...
        return None, f"{type(exc).__name__}: {exc}"


# --- command line ----------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine.evaluate",
                                description="Evaluate a PyMAF checkpoint on held-out synthetic people.")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--report", required=True, help="output folder (report.md, metrics.json, examples)")
    p.add_argument("--count", type=int, default=256)
    p.add_argument("--seed", type=int, default=EVAL_SEED)
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--examples", type=int, default=4)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--autocast", default="none", choices=tuple(AUTOCAST_DTYPES))
    p.add_argument("--cache-dir", default=None, help="synthetic sample cache (see engine.data.synthetic)")
    p.add_argument("--body", default=None,
                   help="SMPL body model for a checkpoint that embeds none (a weights-only export)")
    return p


def main(argv=None) -> int:
    from engine.body.loading import BodyModelError, body_model_from_state_dict, load_body_model
    from engine.model.checkpoint import BODY_PREFIX, CheckpointError, load_pymaf, read_checkpoint, state_dict_of

    args = build_parser().parse_args(argv)
    try:
        given = load_body_model(args.body) if args.body else None
        model, info = load_pymaf(args.checkpoint, body=given)
        obj = read_checkpoint(args.checkpoint)
    except (CheckpointError, BodyModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    train_config = obj.get("train_config") or {}
    if train_config.get("data_seed") == args.seed:
        print(f"warning: seed {args.seed} is the checkpoint's training data seed; the set is not held out",
              file=sys.stderr)
    sd = state_dict_of(obj)
    # the body the network runs on: its embedded one when it has one (as load_pymaf)
    body = body_model_from_state_dict(sd) if any(k.startswith(BODY_PREFIX) for k in sd) else given
    device = resolve_device(args.device)
    model = model.to(device)
    report_dir = Path(args.report)
    report_dir.mkdir(parents=True, exist_ok=True)
    dataset = held_out_dataset(args.count, args.seed, body, args.cache_dir)
    count = min(args.count, len(dataset)) if hasattr(dataset, "__len__") else args.count

    renderer, why = make_renderer(body, 56)
    if renderer is None:
        print(f"note: silhouette / part metrics unavailable (no renderer: {why})", file=sys.stderr)
    results = evaluate_model(model, dataset, indices=range(count), batch_size=args.batch_size, device=device,
                             renderer=renderer, autocast=args.autocast, num_workers=args.workers)
    examples = []
    if args.examples > 0:
        renderer224, _ = make_renderer(body, 224)
        examples = render_examples(model, dataset, range(min(args.examples, count)), renderer224, report_dir,
                                   device=device)
    header = {"checkpoint": str(args.checkpoint), "model": info.get("config"),
              "training configuration": train_config.get("name", "unknown"),
              "training step": obj.get("step", "unknown"), "held-out samples": count,
              "held-out seed": args.seed, "device": str(device),
              "segmentation": "rendered at 56 px with the crop camera" if renderer else f"unavailable ({why})"}
    path = write_report(results, report_dir, header=header, examples=examples)
    base = results["baseline"]
    print(f"MPJPE {_fmt('mpjpe', results['mpjpe'])} mm, PA-MPJPE {_fmt('pa_mpjpe', results['pa_mpjpe'])} mm, "
          f"PVE {_fmt('pve', results['pve'])} mm (mean-pose baseline {_fmt('mpjpe', base['mpjpe'])}, "
          f"{_fmt('pa_mpjpe', base['pa_mpjpe'])}, {_fmt('pve', base['pve'])} mm); {spread_line(results)}; "
          f"report {path}")
    for warning in constant_predictor_warnings(results):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


__all__ = ["held_out_dataset", "evaluate_model", "spread", "mean_pose_baseline", "spread_line",
           "constant_predictor_warnings", "render_examples", "write_report", "make_renderer", "main"]
