"""Training loop: Adam, optional autocast and gradient clipping, checkpoints in the
official layout, exact resume, CSV log and PNG curves.

    python -m engine.train --config pymaf --out runs/pymaf [--steps N] [--resume]
        [--init PATH [--init-trunk-only]] [--checkpoint-every N] [--checkpoint-minutes M]
        [--device auto] [--data-seed S] [--depth 18] [--batch-size B] [--autocast bf16]

Run directory ``--out``:

* ``checkpoint_<step>.pt``: ``save_pymaf`` layout ``{'model', 'config', 'format'}`` plus
  ``optimizer`` (Adam state), ``step``, ``train_config`` (plain dict), ``rng`` (torch /
  CUDA / numpy / python generator states as tensors and numbers), ``scaler`` (fp16 loss
  scaler or None), ``elapsed`` (seconds). Everything loads with ``weights_only=True``;
  ``load_pymaf`` loads the network strictly. The last ``keep_checkpoints`` are kept.
  One is written every ``checkpoint_every`` steps, after ``checkpoint_minutes`` of wall
  time since the last one (default 30; both may change on ``--resume``), at the end, and
  when the run is stopped: the first SIGINT/SIGTERM finishes the current step, saves a
  checkpoint and the logs and exits with code 130 (``--resume`` continues the same
  curve); a second signal exits at once.
* ``log.csv``: step, time (s since the run began, across resumes), loss, every
  weighted loss component (``engine.train.losses.total_loss`` names).
* ``eval.csv`` (when ``eval_every`` > 0): held-out MPJPE / PA-MPJPE / PVE in mm.
* ``curves.png``: the curves (matplotlib, Agg canvas).

Determinism and resume: everything is seeded from the config (``seed`` for the model and
dropout, ``data_seed`` for the data). Batch k holds the same samples in every run: the
sample order is a fixed function of (seed, data_seed, position), not of a sampler's
state, and the DataLoader has its own generator, so building it draws nothing from the
global RNG. Held-out evaluation during training restores the global RNG states afterwards,
so ``eval_every`` does not change the curve. A resumed run restores model, optimizer,
scaler, step and all RNG states and continues the same loss curve (bit-identical on the CPU).

Starting from other weights: ``--init PATH`` (a checkpoint of another run, a weights-only
``save_pymaf`` file or an official release file, read with ``weights_only=True``) sets every
network tensor the file has (a key this network lacks or a shape that differs is refused;
the keys it does not have keep their seeded values and are listed; the body-model buffers
``regressor.*.smpl.*`` stay this run's: they belong to the data). ``--init-trunk-only``
takes only the ResNet trunk (``feature_extractor.*``, or a bare torchvision-style ResNet's
keys). Step, optimizer and RNG start fresh; ``train_config['init']`` records the file.

Real photos: ``--pseudo-labels FILE [--pseudo-size N]`` (``python -m engine.data.pseudo FILE``)
adds N augmented samples of the registry photos' people, labelled by the landmark fit,
after the ``data_size`` renders: batches draw from both (N / (data_size + N) of them real).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import math
import multiprocessing
import os
import random
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Subset

from engine.model.checkpoint import (CheckpointError, guess_kind, is_body_key, read_checkpoint, save_pymaf,
                                     state_dict_of)
from engine.model.inference import AUTOCAST_DTYPES, resolve_device
from engine.model.pymaf import PyMAF, build_pymaf
from engine.train.configs import DEFAULT_PSEUDO_SIZE, EVAL_SEED, TrainConfig, config_names, get_config
from engine.train.data import collate_tensors, synthetic_dataset
from engine.train.losses import batch_to_tensors, components_to_floats, total_loss

CHECKPOINT_GLOB = "checkpoint_*.pt"
# Fields that do not change the loss curve: a resumed run may take new values for them.
RUNTIME_FIELDS = ("num_workers", "eval_every", "eval_count", "checkpoint_every", "checkpoint_minutes",
                  "log_every")
EXIT_INTERRUPTED = 130           # the shell's code for a run stopped by a signal
TRUNK_PREFIX = "feature_extractor."                    # PyMAF's ResNet trunk


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


class WorkerSignals:
    """``worker_init_fn`` of the training DataLoader's workers.

    A SIGINT/SIGTERM sent to the whole process group or cgroup (Ctrl-C, a batch scheduler)
    must not kill the workers while the main process finishes its step and saves. They
    ignore SIGINT (nothing stops workers with it), and SIGTERM while ``shield`` is set
    (``shielded_workers``, around the training loop). Otherwise SIGTERM ends them quietly,
    as torch's own worker handler (which this replaces) does for its parent's
    ``terminate()`` at shutdown.
    """

    def __init__(self, context):
        self.shield = context.Event()

    def __call__(self, _worker_id: int) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        if not self.shield.is_set():
            os._exit(0)


@contextlib.contextmanager
def shielded_workers(loader: DataLoader):
    """While inside: the loader's workers outlive a SIGTERM (see ``WorkerSignals``)."""
    signals = loader.worker_init_fn if isinstance(loader.worker_init_fn, WorkerSignals) else None
    if signals is not None:
        signals.shield.set()
    try:
        yield loader
    finally:
        if signals is not None:
            signals.shield.clear()


def make_loader(dataset, sampler: StepBatchSampler, num_workers: int, pin_memory: bool) -> DataLoader:
    """DataLoader over ``sampler``'s batches; workers use the spawn context (the renderer's
    EGL context must not be forked). Its own generator: no draw from the global RNG."""
    workers = int(num_workers)
    kwargs = {}
    if workers > 0:
        context = multiprocessing.get_context("spawn")
        kwargs = {"multiprocessing_context": context, "persistent_workers": True, "prefetch_factor": 4,
                  "worker_init_fn": WorkerSignals(context)}
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


# --- initial weights from a file ---------------------------------------------------------
def trunk_state(sd: dict) -> dict:
    """The trunk's tensors of a state dict, under this network's ``feature_extractor.`` names.

    A bare torchvision-style ResNet (``conv1.weight``, ``layer1.*``, ``fc.*``) is renamed,
    its classifier dropped: that is how ImageNet trunks are published.
    """
    trunk = {k: v for k, v in sd.items() if k.startswith(TRUNK_PREFIX)}
    if not trunk and "conv1.weight" in sd:
        trunk = {TRUNK_PREFIX + k: v for k, v in sd.items() if not k.startswith("fc.")}
    if not trunk:
        raise CheckpointError(f"no trunk ({TRUNK_PREFIX}* or a bare ResNet's conv1/layer*) in this file; "
                              f"it looks like {guess_kind(sd)}")
    return trunk


def first_misfit(sd: dict, own: dict) -> Optional[str]:
    """Why ``sd`` cannot be copied into a network whose state dict is ``own`` (first key in
    the file's order that the network lacks or holds in another shape; then the first trunk
    key the file lacks, when it has a trunk at all), or None."""
    for key, value in sd.items():
        if key not in own:
            return f"{key} is in the file but not in this run's network"
        if tuple(value.shape) != tuple(own[key].shape):
            return f"{key} has shape {list(value.shape)} in the file, {list(own[key].shape)} in this run's network"
    # A shallower ResNet's trunk fits a deeper one key by key, but half a trunk is no trunk.
    # (BatchNorm's step counters are not weights; older ImageNet files lack them.)
    if any(k.startswith(TRUNK_PREFIX) for k in sd):
        for key in own:
            if key.startswith(TRUNK_PREFIX) and key not in sd and not key.endswith("num_batches_tracked"):
                return f"{key} of this run's trunk is not in the file (another depth, or a partial trunk)"
    return None


def init_weights(model: PyMAF, obj: dict, *, trunk_only: bool = False, name: str = "the file") -> dict:
    """Copy the tensors of checkpoint dict ``obj`` (``read_checkpoint``) into ``model``.

    All of the file's tensors, or with ``trunk_only`` the trunk's; any the network does not
    have in that shape is refused (CheckpointError naming the first). The body-model buffers
    stay the model's own (they belong to the training data, not to the learning).
    -> {'set': keys copied, 'not_set': model keys left as they were, 'body_differs': bool}
    """
    sd = state_dict_of(obj)
    wanted = trunk_state(sd) if trunk_only else sd
    own = model.state_dict()
    problem = first_misfit(wanted, own)
    if problem:
        raise CheckpointError(f"{name} does not fit this run's network ({model.config.trunk_label}, "
                              f"IUV head {'on' if model.config.with_iuv_head else 'off'}): {problem}. "
                              f"The file looks like {guess_kind(sd)}.")
    weights = {k: v for k, v in wanted.items() if not is_body_key(k)}
    body_differs = any(not torch.equal(v.to(own[k].device, own[k].dtype), own[k])
                       for k, v in wanted.items() if is_body_key(k))
    model.load_state_dict(weights, strict=False)
    not_set = [k for k in own if k not in weights and not is_body_key(k)]
    return {"set": list(weights), "not_set": not_set, "body_differs": body_differs}


def describe_keys(keys: list, shown: int = 8) -> str:
    """A short list of state-dict keys: the names when few, else counts per module."""
    if len(keys) <= shown:
        return ", ".join(keys) or "none"
    groups: dict = {}
    for key in keys:
        top = key.split(".", 1)[0]
        groups[top] = groups.get(top, 0) + 1
    return ", ".join(f"{top}.* ({n})" for top, n in groups.items())


# --- stopping on a signal ----------------------------------------------------------------
class StopRequest:
    """While active: the first SIGINT/SIGTERM only records itself (the loop then finishes
    the step, saves and stops); a second one exits at once with code 130.

    Handlers can be installed only in the main thread; elsewhere this records nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signal_name: Optional[str] = None
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc_info) -> bool:
        for sig, handler in self._previous.items():
            # None: the previous handler was not set from Python; the default is the nearest
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()
        return False

    def handle(self, signum, frame) -> None:
        # No printing here: the handler may interrupt a write to the same stream.
        if self.requested:
            raise SystemExit(EXIT_INTERRUPTED)
        self.signal_name = signal.Signals(signum).name


# --- the trainer -------------------------------------------------------------------------
class Trainer:
    """One training run in ``out_dir``.

    dataset: any object with ``__getitem__(i) -> contract sample`` (and ``__len__``);
    default the synthetic dataset of ``config.data_seed``. eval_dataset: the held-out set
    (default synthetic, seed ``EVAL_SEED``). body: the body model the data was made with
    (default the mannequin). resume: continue from the latest checkpoint in ``out_dir``
    (its saved configuration wins, except ``steps`` when ``steps_override`` is given and
    the ``RUNTIME_FIELDS`` in ``runtime_overrides``, which do not change the curve).
    init: a new run's initial weights from this checkpoint file (``init_weights``; only the
    trunk with ``init_trunk_only``); not with ``resume``. ``init_report`` says what was set.
    cache_dir: shard cache of the synthetic datasets (``SyntheticPeople(cache_dir=...)``).
    After ``train()``, ``interrupted`` is the name of the signal that stopped it, or None.
    """

    def __init__(self, config: TrainConfig, out_dir, *, device: str = "auto", dataset=None,
                 eval_dataset=None, body=None, resume: bool = False, steps_override: Optional[int] = None,
                 runtime_overrides: Optional[dict] = None, keep_checkpoints: int = 3, cache_dir=None,
                 init=None, init_trunk_only: bool = False, log: Callable[[str], None] = print):
        if resume and init is not None:
            raise ValueError("resume continues this run's own weights, init starts a new run from another "
                             "file's: give one of them")
        if init_trunk_only and init is None:
            raise ValueError("init_trunk_only needs an init file")
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
        init_obj = None
        if init is not None:
            init_obj = read_checkpoint(init)       # before the slow part: a bad path fails fast
            config = replace(config, init=str(Path(init).resolve()), init_trunk_only=bool(init_trunk_only))
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
        if config.pseudo_size:
            # indices past the renders draw the real photos' pseudo-labelled people
            from engine.data.pseudo import PseudoLabelledPeople
            self.dataset = ConcatDataset([Subset(self.dataset, range(self.num_samples)),
                                          PseudoLabelledPeople(config.pseudo_labels, config.pseudo_size,
                                                               seed=config.data_seed, body=body)])
            self.num_samples += config.pseudo_size

        seed_everything(config.seed)
        self.model = build_pymaf(body, config.model).to(self.device)
        self.run_iuv = config.with_aux
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr,
                                          weight_decay=config.weight_decay)
        self.scaler = (torch.amp.GradScaler(self.device.type)
                       if self.autocast_dtype is torch.float16 else None)
        self.step = 0
        self.elapsed = 0.0
        self.interrupted: Optional[str] = None
        self._last_save = time.monotonic()
        self.history: list = []        # dict rows of log.csv
        self.eval_history: list = []   # dict rows of eval.csv
        self.init_report: Optional[dict] = None
        if init_obj is not None:
            self._initialise(init_obj)
        if resume_obj is not None:
            self._restore(resume_obj)
        else:
            self._reset_logs()

    # -- state ------------------------------------------------------------------------------
    def _initialise(self, obj: dict) -> None:
        cfg = self.config
        name = Path(cfg.init).name
        self.init_report = init_weights(self.model, obj, trunk_only=cfg.init_trunk_only, name=name)
        source = obj.get("train_config") or {}
        origin = f" (step {int(obj['step'])} of run '{source.get('name', '?')}')" if "step" in obj else ""
        what = "trunk" if cfg.init_trunk_only else "network"
        self.log(f"[{cfg.name}] {what} initialised from {cfg.init}{origin}: {len(self.init_report['set'])} "
                 f"tensors set; not set (seeded values): {describe_keys(self.init_report['not_set'])}")
        if self.init_report["body_differs"]:
            self.log(f"[{cfg.name}] note: {name} was trained with another body model; this run keeps its own")

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
        self._last_save = time.monotonic()
        old = sorted(self.out_dir.glob(CHECKPOINT_GLOB))
        for stale in old[:-self.keep_checkpoints] if self.keep_checkpoints > 0 else []:
            stale.unlink(missing_ok=True)
        return path

    # -- one step ---------------------------------------------------------------------------
    def train_step(self, batch: dict) -> tuple:
        """One optimizer step on a batch of CPU tensors -> (loss float, {component: float})."""
        self.model.train()
        batch = batch_to_tensors(batch, self.device, non_blocking=self.device.type == "cuda")
        crops = self.model.prepare_crops(batch["image"])
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
        """Train until ``config.steps`` or a SIGINT/SIGTERM (then ``interrupted`` names it);
        returns the log rows (also in log.csv)."""
        cfg = self.config
        self.interrupted = None
        if self.step >= cfg.steps:
            self.log(f"[{cfg.name}] already at step {self.step} of {cfg.steps}")
            return self.history
        sampler = StepBatchSampler(self.num_samples, cfg.batch_size, seed=_data_order_seed(cfg),
                                   start_step=self.step, total_steps=cfg.steps)
        loader = make_loader(self.dataset, sampler, cfg.num_workers, pin_memory=self.device.type == "cuda")
        self.log(f"[{cfg.name}] training on {self.device} from step {self.step} to {cfg.steps}: "
                 f"batch {cfg.batch_size}, lr {cfg.lr:g}, autocast {cfg.autocast}, "
                 f"{cfg.model.trunk_label}, aux {'on' if self.run_iuv else 'off'}, "
                 f"{self.num_samples} samples (data seed {cfg.data_seed}"
                 + (f"; {cfg.pseudo_size} of them real photos' pseudo-labelled people" if cfg.pseudo_size else "")
                 + ")")
        window_start, window_steps = time.perf_counter(), 0
        last = time.perf_counter()
        self._last_save = time.monotonic()
        with StopRequest() as stop, shielded_workers(loader):
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
                # Stopping: the checkpoint first; an evaluation could outlast the grace period.
                if cfg.eval_every > 0 and self.step % cfg.eval_every == 0 and not stop.requested:
                    self._evaluate()
                    last = time.perf_counter()
                if stop.requested or self._checkpoint_due():
                    path = self.save_checkpoint()
                    self.plot()
                    self.log(f"[{cfg.name}] saved {path.name}")
                    last = time.perf_counter()
                if stop.requested:
                    self.interrupted = stop.signal_name
                    self.log(f"[{cfg.name}] {stop.signal_name}: stopped at step {self.step}; "
                             f"continue with --resume")
                    break
        return self.history

    def _checkpoint_due(self) -> bool:
        cfg = self.config
        if self.step == cfg.steps or (cfg.checkpoint_every > 0 and self.step % cfg.checkpoint_every == 0):
            return True
        # Wall time as well: slow steps would otherwise leave hours of work unsaved.
        return cfg.checkpoint_minutes > 0 and time.monotonic() - self._last_save >= 60.0 * cfg.checkpoint_minutes

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
        # The evaluation (its DataLoader, a lazily built dataset) draws from the global RNGs;
        # restoring them keeps the training curve the same with or without evaluations.
        rng, was_training = rng_state(), self.model.training
        try:
            results = evaluate_model(self.model, self._eval_dataset, indices=range(count),
                                     batch_size=min(self.config.batch_size, 32), device=self.device,
                                     autocast=self.config.autocast)
        finally:
            set_rng_state(rng)
            self.model.train(was_training)
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
    p = argparse.ArgumentParser(prog="python -m engine.train", description="Train PyMAF on synthetic people (and pseudo-labelled real photos).")
    p.add_argument("--config", default="pymaf", choices=config_names())
    p.add_argument("--out", required=True, help="run directory (checkpoints, log.csv, curves.png)")
    p.add_argument("--steps", type=int, default=None, help="train until this step")
    p.add_argument("--epochs", type=float, default=None,
                   help="train until this many passes over the data (instead of --steps)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--init", default=None, metavar="PATH",
                   help="start a new run from this file's weights (another run's checkpoint or a "
                        "weights-only file); step, optimizer and RNG start fresh")
    p.add_argument("--init-trunk-only", action="store_true",
                   help="with --init: take only the ResNet trunk (feature_extractor.*), heads stay seeded")
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
    p.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints (0 = none)")
    p.add_argument("--checkpoint-minutes", type=float, default=None, metavar="M",
                   help="also save after M minutes of wall time since the last checkpoint (default 30, 0 = off)")
    p.add_argument("--cache-dir", default=None, help="store generated synthetic samples here for reuse")
    p.add_argument("--pseudo-labels", default=None, metavar="FILE",
                   help="real photos' pseudo-labels (python -m engine.data.pseudo FILE) to train on too")
    p.add_argument("--pseudo-size", type=int, default=None, metavar="N",
                   help=f"with --pseudo-labels: N augmented real samples next to the renders (default {DEFAULT_PSEUDO_SIZE})")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.data_seed is not None and args.data_seed == EVAL_SEED:
        print(f"--data-seed {EVAL_SEED} is the held-out evaluation set's seed; choose another", file=sys.stderr)
        return 2
    if args.resume and args.init:
        print("--resume continues this run's own weights, --init starts a new run from another file's: "
              "give one of them", file=sys.stderr)
        return 2
    if args.init_trunk_only and not args.init:
        print("--init-trunk-only needs --init PATH", file=sys.stderr)
        return 2
    runtime = {"num_workers": args.workers, "eval_every": args.eval_every,
               "checkpoint_every": args.checkpoint_every, "checkpoint_minutes": args.checkpoint_minutes}
    if args.pseudo_size is not None and not args.pseudo_labels:
        print("--pseudo-size goes with --pseudo-labels FILE", file=sys.stderr)
        return 2
    pseudo = {}
    if args.pseudo_labels:
        pseudo = {"pseudo_labels": str(Path(args.pseudo_labels).resolve()),
                  "pseudo_size": DEFAULT_PSEUDO_SIZE if args.pseudo_size is None else args.pseudo_size}
    config = get_config(args.config, depth=args.depth, data_seed=args.data_seed, data_size=args.data_size,
                        batch_size=args.batch_size, lr=args.lr, autocast=args.autocast,
                        grad_clip=args.grad_clip, seed=args.seed, **pseudo)
    if args.resume:
        ignored = [name for name in ("depth", "data_seed", "data_size", "batch_size", "lr", "autocast",
                                     "grad_clip", "seed", "pseudo_labels", "pseudo_size")
                   if getattr(args, name) is not None]
        if ignored:
            print(f"note: --resume keeps the run's saved settings; ignoring {', '.join(ignored)}",
                  file=sys.stderr)
    steps = args.steps
    if args.epochs is not None:
        if steps is not None:
            print("give --steps or --epochs, not both", file=sys.stderr)
            return 2
        steps = config.steps_for_epochs(args.epochs)
    try:
        trainer = Trainer(config, args.out, device=args.device, resume=args.resume, steps_override=steps,
                          runtime_overrides=runtime, cache_dir=args.cache_dir, init=args.init,
                          init_trunk_only=args.init_trunk_only)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    trainer.train()
    trainer.plot()
    if trainer.interrupted:
        print(f"[{trainer.config.name}] stopped by {trainer.interrupted} at step {trainer.step} (checkpoint "
              f"saved); continue with --resume --out {trainer.out_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"[{trainer.config.name}] done at step {trainer.step}; run directory {trainer.out_dir}")
    return 0


__all__ = ["Trainer", "StepBatchSampler", "StopRequest", "seed_everything", "rng_state", "set_rng_state",
           "collate_tensors", "make_loader", "synthetic_dataset", "latest_checkpoint", "checkpoint_path",
           "init_weights", "trunk_state", "plot_curves", "main", "EXIT_INTERRUPTED"]
