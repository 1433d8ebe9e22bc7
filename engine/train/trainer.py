"""Training loop: Adam, optional autocast and gradient clipping, checkpoints in the
official layout, exact resume, CSV log and PNG curves.

    python -m engine.train --config pymaf --out runs/pymaf [--steps N] [--resume]
        [--device auto] [--data-seed S] [--depth 18] [--batch-size B] [--autocast bf16]

Run directory ``--out``:

* ``checkpoint_<step>.pt``: ``save_pymaf`` layout ``{'model', 'config', 'format'}`` plus
  ``optimizer`` (Adam state), ``step``, ``train_config`` (plain dict), ``rng`` (torch /
  CUDA / numpy / python generator states as tensors and numbers), ``scaler`` (fp16 loss
  scaler or None), ``elapsed`` (seconds). Everything loads with ``weights_only=True``;
  ``load_pymaf`` loads the network strictly. The last ``keep_checkpoints`` are kept.
* ``log.csv``: step, time (s since the run began, across resumes), loss, every
  weighted loss component (``engine.train.losses.total_loss`` names).
* ``eval.csv`` (when ``eval_every`` > 0): held-out MPJPE / PA-MPJPE / PVE in mm.
* ``curves.png``: the curves (matplotlib, Agg canvas).

Determinism and resume: everything is seeded from the config (``seed`` for the model and
dropout, ``data_seed`` for the data). Batch k holds the same samples in every run: the
sample order is a fixed function of (seed, data_seed, position), not of a sampler's
state, and the DataLoader has its own generator, so building it draws nothing from the
global RNG. A resumed run restores model, optimizer, scaler, step and all RNG states and
continues the same loss curve (bit-identical on the CPU).
"""
from __future__ import annotations

import argparse
import csv
import math
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from engine.model.checkpoint import read_checkpoint, save_pymaf, state_dict_of
from engine.model.inference import AUTOCAST_DTYPES, normalize_crops, resolve_device
from engine.model.pymaf import PyMAF
from engine.train.configs import EVAL_SEED, TrainConfig, config_names, get_config
from engine.train.data import collate_tensors, synthetic_dataset
from engine.train.losses import batch_to_tensors, components_to_floats, total_loss

CHECKPOINT_GLOB = "checkpoint_*.pt"
# Fields that do not change the loss curve: a resumed run may take new values for them.
RUNTIME_FIELDS = ("num_workers", "eval_every", "eval_count", "checkpoint_every", "log_every")


# --- seeding and RNG state ---------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Python, numpy and torch (CPU and every CUDA device) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """All global generator states, as weights_only-loadable values."""
    keys, pos, has_gauss, cached = np.random.get_state()[1:]
    version, py_state, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": gauss},
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of ``rng_state``."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- data --------------------------------------------------------------------------------
class StepBatchSampler:
    """Infinite (or ``total_steps``-long) stream of index batches starting at ``start_step``.

    The stream is the concatenation of per-epoch permutations of range(n), each drawn
    from ``np.random.default_rng([seed, epoch])``: batch k is a function of k alone.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int = 0,
                 total_steps: Optional[int] = None):
        if n <= 0:
            raise ValueError("the dataset is empty")
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self.start_step, self.total_steps = int(start_step), total_steps
        self._perm_epoch, self._perm = -1, None

    def _index(self, position: int) -> int:
        epoch, i = divmod(position, self.n)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._perm_epoch = epoch
        return int(self._perm[i])

    def batch(self, step: int) -> list:
        return [self._index(step * self.batch_size + k) for k in range(self.batch_size)]

    def __iter__(self):
        step = self.start_step
        while self.total_steps is None or step < self.total_steps:
            yield self.batch(step)
            step += 1

    def __len__(self) -> int:
        if self.total_steps is None:
            raise TypeError("infinite sampler")
        return max(0, self.total_steps - self.start_step)


def make_loader(dataset, sampler: StepBatchSampler, num_workers: int, pin_memory: bool) -> DataLoader:
    """DataLoader over ``sampler``'s batches; workers use the spawn context (the renderer's
    EGL context must not be forked). Its own generator: no draw from the global RNG."""
    workers = int(num_workers)
    kwargs = {}
    if workers > 0:
        kwargs = {"multiprocessing_context": "spawn", "persistent_workers": True, "prefetch_factor": 4}
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate_tensors,
                      pin_memory=pin_memory, generator=torch.Generator().manual_seed(0), **kwargs)


def dataset_size(dataset, wanted: int) -> int:
    """Number of indices to draw from: ``wanted``, capped by the dataset's length if any."""
    try:
        return min(int(wanted), len(dataset))
    except TypeError:
        return int(wanted)


# --- checkpoints -------------------------------------------------------------------------
def checkpoint_path(out_dir, step: int) -> Path:
    return Path(out_dir) / f"checkpoint_{step:08d}.pt"


def latest_checkpoint(out_dir) -> Optional[Path]:
    files = sorted(Path(out_dir).glob(CHECKPOINT_GLOB))
    return files[-1] if files else None


# --- the trainer -------------------------------------------------------------------------
class Trainer:
    """One training run in ``out_dir``.

    dataset: any object with ``__getitem__(i) -> contract sample`` (and ``__len__``);
    default the synthetic dataset of ``config.data_seed``. eval_dataset: the held-out set
    (default synthetic, seed ``EVAL_SEED``). body: the body model the data was made with
    (default the mannequin). resume: continue from the latest checkpoint in ``out_dir``
    (its saved configuration wins, except ``steps`` when ``steps_override`` is given and
    the ``RUNTIME_FIELDS`` in ``runtime_overrides``, which do not change the curve).
    cache_dir: shard cache of the synthetic datasets (``SyntheticPeople(cache_dir=...)``).
    """

    def __init__(self, config: TrainConfig, out_dir, *, device: str = "auto", dataset=None,
                 eval_dataset=None, body=None, resume: bool = False, steps_override: Optional[int] = None,
                 runtime_overrides: Optional[dict] = None, keep_checkpoints: int = 3, cache_dir=None,
                 log: Callable[[str], None] = print):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.keep_checkpoints = keep_checkpoints
        self.device = resolve_device(device)
        resume_obj = None
        if resume:
            path = latest_checkpoint(self.out_dir)
            if path is None:
                log(f"no checkpoint in {self.out_dir}; starting a new run")
            else:
                resume_obj = read_checkpoint(path)
                config = TrainConfig.from_dict(resume_obj["train_config"])
                log(f"resuming from {path.name} (step {int(resume_obj['step'])})")
        if steps_override is not None:
            config = replace(config, steps=int(steps_override))
        runtime = {k: v for k, v in (runtime_overrides or {}).items() if v is not None}
        if set(runtime) - set(RUNTIME_FIELDS):
            raise ValueError(f"runtime_overrides may only set {RUNTIME_FIELDS}")
        if runtime:
            config = replace(config, **runtime)
        self.config = config
        self.autocast_dtype = AUTOCAST_DTYPES[config.autocast]
        if self.autocast_dtype is torch.float16 and self.device.type != "cuda":
            raise ValueError("fp16 autocast needs a CUDA GPU; use bf16 (or none) here")

        if body is None:
            from engine.body.mannequin import build_mannequin
            body = build_mannequin()
        self.body = body
        self.cache_dir = cache_dir
        self.dataset = (dataset if dataset is not None
                        else synthetic_dataset(config.data_seed, config.data_size, body, cache_dir))
        self._eval_dataset = eval_dataset
        self.num_samples = dataset_size(self.dataset, config.data_size)

        seed_everything(config.seed)
        self.model = PyMAF(body, config.model).to(self.device)
        self.run_iuv = config.with_aux
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr,
                                          weight_decay=config.weight_decay)
        self.scaler = (torch.amp.GradScaler(self.device.type)
                       if self.autocast_dtype is torch.float16 else None)
        self.step = 0
        self.elapsed = 0.0
        self.history: list = []        # dict rows of log.csv
        self.eval_history: list = []   # dict rows of eval.csv
        if resume_obj is not None:
            self._restore(resume_obj)
        else:
            self._reset_logs()

    # -- state ------------------------------------------------------------------------------
    def _restore(self, obj: dict) -> None:
        self.model.load_state_dict(state_dict_of(obj), strict=True)
        self.optimizer.load_state_dict(obj["optimizer"])
        if self.scaler is not None and obj.get("scaler"):
            self.scaler.load_state_dict(obj["scaler"])
        self.step = int(obj["step"])
        self.elapsed = float(obj.get("elapsed", 0.0))
        set_rng_state(obj["rng"])
        self.history = [r for r in self._read_csv("log.csv") if int(r["step"]) <= self.step]
        self.eval_history = [r for r in self._read_csv("eval.csv") if int(r["step"]) <= self.step]
        self._write_csv("log.csv", self.history)
        self._write_csv("eval.csv", self.eval_history)

    def _reset_logs(self) -> None:
        for name in ("log.csv", "eval.csv"):
            (self.out_dir / name).unlink(missing_ok=True)

    def save_checkpoint(self) -> Path:
        path = checkpoint_path(self.out_dir, self.step)
        extra = {
            "optimizer": self.optimizer.state_dict(),
            "step": int(self.step),
            "train_config": self.config.to_dict(),
            "rng": rng_state(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "elapsed": float(self.elapsed),
        }
        save_pymaf(self.model, path, extra=extra)
        old = sorted(self.out_dir.glob(CHECKPOINT_GLOB))
        for stale in old[:-self.keep_checkpoints] if self.keep_checkpoints > 0 else []:
            stale.unlink(missing_ok=True)
        return path

    # -- one step ---------------------------------------------------------------------------
    def train_step(self, batch: dict) -> tuple:
        """One optimizer step on a batch of CPU tensors -> (loss float, {component: float})."""
        self.model.train()
        batch = batch_to_tensors(batch, self.device, non_blocking=self.device.type == "cuda")
        crops = normalize_crops(batch["image"])
        out = self.model(crops, run_iuv=self.run_iuv, autocast_dtype=self.autocast_dtype)
        loss, components = total_loss(out, batch, self.config.loss)
        self.optimizer.zero_grad(set_to_none=True)
        values = components_to_floats({"loss": loss.detach(), **components})
        total = values.pop("loss")
        if not math.isfinite(total):
            raise FloatingPointError(f"step {self.step + 1}: loss is {total}; components {values}")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            self._clip()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self._clip()
            self.optimizer.step()
        return total, values

    def _clip(self) -> None:
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)

    # -- the loop ---------------------------------------------------------------------------
    def train(self) -> list:
        """Train until ``config.steps``; returns the log rows (also in log.csv)."""
        cfg = self.config
        if self.step >= cfg.steps:
            self.log(f"[{cfg.name}] already at step {self.step} of {cfg.steps}")
            return self.history
        sampler = StepBatchSampler(self.num_samples, cfg.batch_size, seed=_data_order_seed(cfg),
                                   start_step=self.step, total_steps=cfg.steps)
        loader = make_loader(self.dataset, sampler, cfg.num_workers, pin_memory=self.device.type == "cuda")
        self.log(f"[{cfg.name}] training on {self.device} from step {self.step} to {cfg.steps}: "
                 f"batch {cfg.batch_size}, lr {cfg.lr:g}, autocast {cfg.autocast}, "
                 f"ResNet-{cfg.model.backbone_depth}, aux {'on' if self.run_iuv else 'off'}, "
                 f"{self.num_samples} samples (data seed {cfg.data_seed})")
        window_start, window_steps = time.perf_counter(), 0
        last = time.perf_counter()
        for batch in loader:
            loss, components = self.train_step(batch)
            now = time.perf_counter()
            self.elapsed += now - last
            last = now
            self.step += 1
            window_steps += 1
            row = {"step": self.step, "time": round(self.elapsed, 3), "loss": loss, **components}
            self.history.append(row)
            self._append_csv("log.csv", row)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                rate = (now - window_start) / max(window_steps, 1)
                self.log(self._progress_line(row, rate))
                window_start, window_steps = now, 0
            if cfg.eval_every > 0 and self.step % cfg.eval_every == 0:
                self._evaluate()
                last = time.perf_counter()
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                path = self.save_checkpoint()
                self.plot()
                self.log(f"[{cfg.name}] saved {path.name}")
                last = time.perf_counter()
        return self.history

    def _progress_line(self, row: dict, seconds_per_step: float) -> str:
        groups: dict = {}
        for key, value in row.items():
            if key in ("step", "time", "loss"):
                continue
            kind = key.rsplit("_", 1)[0] if key[-1].isdigit() else key
            groups[kind] = groups.get(kind, 0.0) + value
        parts = " ".join(f"{k} {v:.4g}" for k, v in groups.items())
        return (f"[{self.config.name}] step {row['step']}/{self.config.steps} loss {row['loss']:.5g} | "
                f"{parts} | {seconds_per_step:.3f} s/step, "
                f"{self.config.batch_size / max(seconds_per_step, 1e-9):.1f} samples/s")

    def _evaluate(self) -> None:
        from engine.train.evaluate import evaluate_model, held_out_dataset

        if self._eval_dataset is None:
            self._eval_dataset = held_out_dataset(self.config.eval_count, body=self.body, cache_dir=self.cache_dir)
        count = dataset_size(self._eval_dataset, self.config.eval_count)
        results = evaluate_model(self.model, self._eval_dataset, indices=range(count),
                                 batch_size=min(self.config.batch_size, 32), device=self.device,
                                 autocast=self.config.autocast)
        self.model.train()
        row = {"step": self.step, "mpjpe": results["mpjpe"], "pa_mpjpe": results["pa_mpjpe"],
               "pve": results["pve"]}
        self.eval_history.append(row)
        self._append_csv("eval.csv", row)
        self.log(f"[{self.config.name}] eval at step {self.step} on {count} held-out samples: "
                 f"MPJPE {row['mpjpe']:.1f} mm, PA-MPJPE {row['pa_mpjpe']:.1f} mm, PVE {row['pve']:.1f} mm")

    # -- logs -------------------------------------------------------------------------------
    def _read_csv(self, name: str) -> list:
        path = self.out_dir / name
        if not path.exists():
            return []
        with open(path, newline="") as fh:
            rows = []
            for r in csv.DictReader(fh):
                rows.append({k: (int(v) if k == "step" else float(v)) for k, v in r.items() if v != ""})
            return rows

    def _write_csv(self, name: str, rows: list) -> None:
        path = self.out_dir / name
        if not rows:
            path.unlink(missing_ok=True)
            return
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    def _append_csv(self, name: str, row: dict) -> None:
        path = self.out_dir / name
        new = not path.exists()
        with open(path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def plot(self) -> Path:
        return plot_curves(self.history, self.eval_history, self.out_dir / "curves.png", title=self.config.name)


def _data_order_seed(cfg: TrainConfig) -> int:
    return int(cfg.data_seed) * 1_000_003 + int(cfg.seed)


def plot_curves(history: list, eval_history: list, path, title: str = "") -> Path:
    """Total loss, final-stage and IUV components (log scale), and held-out errors."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = 3 if eval_history else 2
    fig = Figure(figsize=(5.5 * panels, 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels)
    steps = [r["step"] for r in history]
    if history:
        axes[0].plot(steps, [r["loss"] for r in history], lw=1)
        keys = [k for k in history[0] if k not in ("step", "time", "loss")]
        last_stage = max((int(k.rsplit("_", 1)[1]) for k in keys if k[-1].isdigit()), default=0)
        shown = [k for k in keys if k.endswith(f"_{last_stage}") or not k[-1].isdigit()]
        for k in shown:
            axes[1].plot(steps, [max(r.get(k, np.nan), 1e-12) for r in history], lw=1, label=k)
        axes[1].legend(fontsize=7, ncol=2)
    axes[0].set(title=f"{title} total loss", xlabel="step", yscale="log")
    axes[1].set(title="components (final stage, IUV)", xlabel="step", yscale="log")
    if eval_history:
        es = [r["step"] for r in eval_history]
        for key in ("mpjpe", "pa_mpjpe", "pve"):
            axes[2].plot(es, [r[key] for r in eval_history], marker="o", label=key)
        axes[2].set(title="held-out errors (mm)", xlabel="step")
        axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)


# --- command line ------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine.train", description="Train PyMAF on synthetic people.")
    p.add_argument("--config", default="pymaf", choices=config_names())
    p.add_argument("--out", required=True, help="run directory (checkpoints, log.csv, curves.png)")
    p.add_argument("--steps", type=int, default=None, help="train until this step")
    p.add_argument("--epochs", type=float, default=None,
                   help="train until this many passes over the data (instead of --steps)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    p.add_argument("--data-seed", type=int, default=None)
    p.add_argument("--data-size", type=int, default=None)
    p.add_argument("--depth", type=int, default=None, choices=(18, 34, 50), help="ResNet depth override")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--autocast", default=None, choices=("none", "bf16", "fp16"))
    p.add_argument("--grad-clip", type=float, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--cache-dir", default=None, help="store generated synthetic samples here for reuse")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.data_seed is not None and args.data_seed == EVAL_SEED:
        print(f"--data-seed {EVAL_SEED} is the held-out evaluation set's seed; choose another", file=sys.stderr)
        return 2
    runtime = {"num_workers": args.workers, "eval_every": args.eval_every,
               "checkpoint_every": args.checkpoint_every}
    config = get_config(args.config, depth=args.depth, data_seed=args.data_seed, data_size=args.data_size,
                        batch_size=args.batch_size, lr=args.lr, autocast=args.autocast,
                        grad_clip=args.grad_clip, seed=args.seed)
    if args.resume:
        ignored = [name for name in ("depth", "data_seed", "data_size", "batch_size", "lr", "autocast",
                                     "grad_clip", "seed") if getattr(args, name) is not None]
        if ignored:
            print(f"note: --resume keeps the run's saved settings; ignoring {', '.join(ignored)}",
                  file=sys.stderr)
    steps = args.steps
    if args.epochs is not None:
        if steps is not None:
            print("give --steps or --epochs, not both", file=sys.stderr)
            return 2
        steps = config.steps_for_epochs(args.epochs)
    trainer = Trainer(config, args.out, device=args.device, resume=args.resume, steps_override=steps,
                      runtime_overrides=runtime, cache_dir=args.cache_dir)
    trainer.train()
    trainer.plot()
    print(f"[{trainer.config.name}] done at step {trainer.step}; run directory {trainer.out_dir}")
    return 0


__all__ = ["Trainer", "StepBatchSampler", "seed_everything", "rng_state", "set_rng_state", "collate_tensors",
           "make_loader", "synthetic_dataset", "latest_checkpoint", "checkpoint_path", "plot_curves", "main"]
