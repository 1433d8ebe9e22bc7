"""The linear probe of engine.measure.trunk_probe ranks an informative feature above noise and
the mean pose, and the pooling keeps channels apart."""
import numpy as np
import torch

from engine.measure.trunk_probe import mpjpe_mm, pooled, probe


def test_probe_ranks_information_above_noise():
    rng = np.random.default_rng(0)
    n, d = 400, 20
    latent = rng.normal(size=(n, d))
    joints = latent @ rng.normal(size=(d, 72)) * 0.01           # metres
    sets = {"joints": joints, "informative": latent + 0.1 * rng.normal(size=(n, d)),
            "noise": rng.normal(size=(n, d))}
    train = {k: v[:300] for k, v in sets.items()}
    test = {k: v[300:] for k, v in sets.items()}
    res = probe(train, test)
    assert res["informative"][0] < 0.3 * res["mean pose (no image)"][0]
    assert res["noise"][0] > 0.9 * res["mean pose (no image)"][0]
    assert mpjpe_mm(joints, joints) == 0.0


def test_pooling_is_per_channel_cells():
    m = torch.zeros(1, 2, 8, 8)
    m[0, 1, :2, :2] = 4.0                                       # channel 1, top-left cell
    f = pooled(m)
    assert f.shape == (1, 2 * 16) and f[0, 16] == 4.0 and f[0, :16].sum() == 0 and f[0, 17:].sum() == 0
