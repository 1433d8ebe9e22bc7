"""Training and evaluation data: the synthetic people dataset and batching into tensors.

Shared by the trainer and the evaluation (which must not depend on the trainer).
"""
from __future__ import annotations

import numpy as np
import torch

from engine.data.sample import collate


def collate_tensors(samples: list) -> dict:
    """List of contract samples -> dict of CPU tensors (module level: picklable for spawn)."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in collate(samples).items()}


def synthetic_dataset(seed: int, size: int, body=None, cache_dir=None):
    """The synthetic people dataset (``engine.data.synthetic.SyntheticPeople``): ``size``
    samples of seed ``seed`` rendered with ``body`` (default the mannequin); ``cache_dir``
    stores generated shards for reuse."""
    from engine.data.synthetic import SyntheticPeople

    return SyntheticPeople(length=int(size), seed=int(seed), body=body, cache_dir=cache_dir)
