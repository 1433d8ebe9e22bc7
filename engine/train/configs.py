"""Named training configurations.

=================  ==============  ========  =======  ====  =====================================
name               feature_mode    pyramid   aux      net   paper row (ablations, ICCV 2021)
=================  ==============  ========  =======  ====  =====================================
pymaf              maf             yes       yes      R50   the full model ("PyMAF"), Tables 4/5
ief_global         global          --        no       R50   Table 4: IEF baseline, pooled global
                                                            features, one shared regressor x 3
grid               grid            yes       yes      R50   Table 4: grid-pattern features at
                                                            every stage
grid_no_aux        grid            yes       no       R50   Table 4/5: grid features, no aux
                                                            dense supervision
maf_no_pyramid     maf             no        yes      R50   Table 5: mesh-aligned features all
                                                            sampled from the finest (56x56) map
pymaf_no_aux       maf             yes       no       R50   Table 5: PyMAF without the auxiliary
                                                            IUV supervision
tiny               maf             yes       yes      R18   CPU tests only (batch 8, 40 steps,
                                                            16 samples, lr 1e-4)
blaze              maf             yes       yes      BP    the full model's heads on the frozen
                                                            BlazePose GHUM full trunk ("BP")
blaze_grid         grid            yes       yes      BP    Table 4's grid row on that trunk
blaze_global       global          --        no       BP    Table 4's IEF baseline on that trunk
blaze_no_pyramid   maf             no        yes      BP    Table 5's no-pyramid row on that trunk
blaze_default      maf             yes       yes      BP    ``blaze`` with 512-wide regressors:
                                                            the shipped heads (default_recipe.py)
=================  ==============  ========  =======  ====  =====================================

The row labels are as the ablations are described (feature type, pyramid, auxiliary
supervision); check the exact table and row names against the paper before quoting
numbers next to them. Any configuration takes a backbone override (``--depth 18`` /
``get_config(name, depth=18)``: ResNet-18/34/50), e.g. for a backbone row.

Release training settings shared by the named configurations (``configs/pymaf_config.yaml``
and ``core/trainer.py``): Adam, lr 5e-5, no weight decay, no learning-rate decay, batch
64, loss weights ``LossWeights()``; no gradient clipping (``grad_clip`` 0 = off) and full
precision (``autocast`` 'none'). The release trains for up to 500k iterations on mixed
real datasets; here ``steps`` is the run length on the synthetic data (``--epochs`` converts
passes over ``data_size`` samples into steps).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Optional

from engine.model.pymaf import ModelConfig
from engine.train.losses import LossWeights

AUTOCAST_CHOICES = ("none", "bf16", "fp16")
EVAL_SEED = 20_211_010  # the held-out synthetic set; training data seeds must differ


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (saved into its checkpoints as a plain dict)."""

    name: str
    model: ModelConfig = field(default_factory=ModelConfig)
    batch_size: int = 64
    lr: float = 5e-5
    weight_decay: float = 0.0
    steps: int = 200_000               # optimizer steps of the run
    autocast: str = "none"             # none | bf16 | fp16 (trunk + pyramid only)
    grad_clip: float = 0.0             # max global gradient norm; 0 = no clipping
    seed: int = 0                      # model init, dropout, everything but the data
    num_workers: int = 8               # DataLoader workers (spawn); 0 = in process
    data_seed: int = 1                 # the training set's seed
    data_size: int = 100_000           # distinct training samples (indices 0..size-1)
    eval_every: int = 5000             # steps between held-out evaluations; 0 = never
    eval_count: int = 256              # held-out samples per evaluation
    checkpoint_every: int = 5000       # steps between checkpoints (one at the end anyway; 0 = none)
    checkpoint_minutes: float = 30.0   # also one after this much wall time; 0 = off
    log_every: int = 50                # steps between progress lines
    loss: LossWeights = field(default_factory=LossWeights)
    init: str = ""                     # weights file the run started from ('' = seeded)
    init_trunk_only: bool = False      # only the trunk (feature_extractor.*) came from it
    pseudo_labels: str = ""            # real photos' pseudo-labels (engine/data/pseudo.py); '' = none
    pseudo_size: int = 0               # augmented real samples drawn next to the data_size renders

    def __post_init__(self):
        if self.autocast not in AUTOCAST_CHOICES:
            raise ValueError(f"autocast must be one of {AUTOCAST_CHOICES}, got {self.autocast!r}")
        if self.data_seed == EVAL_SEED:
            raise ValueError(f"data_seed {EVAL_SEED} is the held-out evaluation set's seed")
        if self.pseudo_size < 0 or (self.pseudo_size > 0) != bool(self.pseudo_labels):
            raise ValueError("pseudo_size > 0 goes with a pseudo_labels file (and only with one)")
        if self.checkpoint_minutes < 0:
            raise ValueError(f"checkpoint_minutes must be >= 0 (0 = off), got {self.checkpoint_minutes}")

    @property
    def with_aux(self) -> bool:
        """Auxiliary IUV supervision: the head exists and its loss weights are not zero."""
        return self.model.with_iuv_head and self.loss.has_aux

    def steps_for_epochs(self, epochs: float) -> int:
        """Optimizer steps for ``epochs`` passes over the ``data_size`` training samples."""
        return max(1, math.ceil(epochs * self.data_size / self.batch_size))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        d["loss"] = self.loss.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        kwargs["model"] = ModelConfig.from_dict(d.get("model", {}))
        kwargs["loss"] = LossWeights.from_dict(d.get("loss", {}))
        return cls(**kwargs)


DEFAULT_PSEUDO_SIZE = 400   # --pseudo-labels without --pseudo-size (1 in 11 next to 4000 renders)


def _paper(name: str, **model) -> TrainConfig:
    with_iuv = model.pop("with_iuv_head", True)
    loss = LossWeights() if with_iuv else LossWeights().without_aux()
    return TrainConfig(name=name, model=ModelConfig(backbone_depth=50, with_iuv_head=with_iuv, **model),
                       loss=loss)


def _tiny() -> TrainConfig:
    return TrainConfig(
        name="tiny", model=ModelConfig(backbone_depth=18, with_iuv_head=True), batch_size=8,
        lr=1e-4, steps=40, num_workers=0, data_size=16, eval_every=0, eval_count=16,
        checkpoint_every=20, log_every=5, grad_clip=0.0)


def _blaze(name: str, **model) -> TrainConfig:
    """PyMAF's heads on the frozen BlazePose GHUM full trunk, sized for these 2 CPU cores: the
    trunk is not trained, so a step costs the heads (~65 ms a sample) and the data; the same
    budget for every ablation (docs/training.md)."""
    with_iuv = model.pop("with_iuv_head", True)
    loss = LossWeights() if with_iuv else LossWeights().without_aux()
    return TrainConfig(name=name, model=ModelConfig(trunk="blazepose-full", with_iuv_head=with_iuv, **model),
                       loss=loss, batch_size=16, lr=1e-4, steps=4000, num_workers=1, data_size=4000,
                       eval_every=500, eval_count=200, checkpoint_every=500, log_every=50)


CONFIGS = {
    "pymaf": lambda: _paper("pymaf", feature_mode="maf", use_pyramid=True),
    "ief_global": lambda: _paper("ief_global", feature_mode="global", with_iuv_head=False),
    "grid": lambda: _paper("grid", feature_mode="grid", use_pyramid=True),
    "grid_no_aux": lambda: _paper("grid_no_aux", feature_mode="grid", with_iuv_head=False),
    "maf_no_pyramid": lambda: _paper("maf_no_pyramid", feature_mode="maf", use_pyramid=False),
    "pymaf_no_aux": lambda: _paper("pymaf_no_aux", feature_mode="maf", with_iuv_head=False),
    "tiny": _tiny,
    "blaze": lambda: _blaze("blaze", feature_mode="maf", use_pyramid=True),
    "blaze_grid": lambda: _blaze("blaze_grid", feature_mode="grid", use_pyramid=True),
    "blaze_global": lambda: _blaze("blaze_global", feature_mode="global", with_iuv_head=False),
    "blaze_no_pyramid": lambda: _blaze("blaze_no_pyramid", feature_mode="maf", use_pyramid=False),
    # the shipped heads (build.py train-default): regressors 512 wide so that the weights
    # without the training-only IUV head fit 20 MB in float16
    "blaze_default": lambda: _blaze("blaze_default", feature_mode="maf", use_pyramid=True, regressor_width=512),
}


def config_names() -> tuple:
    return tuple(CONFIGS)


def get_config(name: str, *, depth: Optional[int] = None, **overrides) -> TrainConfig:
    """The named configuration, with an optional backbone ``depth`` and field overrides
    (``steps``, ``batch_size``, ``data_seed``, ... ; None values are ignored)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown configuration {name!r}; choose one of {', '.join(CONFIGS)}")
    cfg = CONFIGS[name]()
    if depth is not None:
        cfg = replace(cfg, model=replace(cfg.model, backbone_depth=int(depth)))
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return replace(cfg, **overrides) if overrides else cfg


__all__ = ["TrainConfig", "CONFIGS", "DEFAULT_PSEUDO_SIZE", "config_names", "get_config", "AUTOCAST_CHOICES", "EVAL_SEED"]
