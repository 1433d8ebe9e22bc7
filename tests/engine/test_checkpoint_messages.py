"""What the checkpoint loaders say about files that are not PyMAF checkpoints: the expected
layout and what was found for another model's weights; 'unsafe' (refused, not 'corrupt') for a
plain pickle that holds code."""
from __future__ import annotations

import collections
import os
import pickle

import numpy as np
import pytest
import torch

from engine.model.checkpoint import EXPECTED_KEYS, OFFICIAL_KEY_COUNT, CheckpointError, load_pymaf
from engine.safe_torch import TorchFileError, read_torch_file


class _Mkdir:
    """Unpickling this calls os.mkdir(path): code in a pickle."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_expected_keys_are_the_networks_own():
    from engine.body.mannequin import build_mannequin
    from engine.model.pymaf import ModelConfig, PyMAF

    sd = PyMAF(build_mannequin(), ModelConfig()).state_dict()
    assert len(sd) == OFFICIAL_KEY_COUNT
    assert set(EXPECTED_KEYS) <= set(sd)


def test_plain_linear_weights_say_what_was_expected_and_found(tmp_path):
    torch.manual_seed(0)
    torch.save(torch.nn.Linear(3, 4).state_dict(), tmp_path / "linear.pt")
    with pytest.raises(CheckpointError) as ei:
        load_pymaf(tmp_path / "linear.pt")
    msg = str(ei.value)
    assert msg.startswith("linear.pt: this looks like an unknown PyTorch model.")
    assert f"{OFFICIAL_KEY_COUNT} tensors" in msg and all(k in msg for k in EXPECTED_KEYS[:3])
    assert "Found 2 tensor(s): weight [4, 3], bias [4]." in msg
    assert len(msg.splitlines()) == 1          # run shows the first line only: all of it


def test_many_keys_show_the_first_few(tmp_path):
    torch.save({f"layer{i}.weight": torch.zeros(i + 1) for i in range(9)}, tmp_path / "nine.pt")
    with pytest.raises(CheckpointError) as ei:
        load_pymaf(tmp_path / "nine.pt")
    assert "Found 9 tensor(s): layer0.weight [1], layer1.weight [2], layer2.weight [3], layer3.weight [4], " \
           "layer4.weight [5], ..." in str(ei.value)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_pickle_with_code_is_called_unsafe_not_corrupt(tmp_path, protocol):
    marker = tmp_path / "ran"
    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps({"model": {"w": _Mkdir(marker)}}, protocol=protocol))
    with pytest.raises(TorchFileError) as ei:
        read_torch_file(bad)
    assert ei.value.unsafe, str(ei.value)
    msg = str(ei.value)
    assert "refused" in msg and "mkdir" in msg and "corrupt" not in msg
    assert not marker.exists()                  # nothing was run
    with pytest.raises(CheckpointError) as ei:  # and the checkpoint loader passes it on
        load_pymaf(bad)
    assert "refused" in str(ei.value) and "corrupt" not in str(ei.value)


def test_pickles_of_other_objects_are_unsafe_too(tmp_path):
    for name, obj in (("counter.pkl", {"c": collections.Counter("aab")}), ("array.pkl", {"a": np.zeros(3)})):
        (tmp_path / name).write_bytes(pickle.dumps(obj, protocol=4))
        with pytest.raises(TorchFileError) as ei:
            read_torch_file(tmp_path / name)
        assert ei.value.unsafe and "refused" in str(ei.value), str(ei.value)


def test_real_checkpoints_still_load_and_junk_is_still_corrupt(tmp_path):
    sd = {"model": {"w": torch.arange(3.0)}, "config": {"a": 1}}
    torch.save(sd, tmp_path / "zip.pt")
    torch.save(sd, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name in ("zip.pt", "legacy.pt"):
        assert torch.equal(read_torch_file(tmp_path / name)["model"]["w"], torch.arange(3.0))
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(TorchFileError) as ei:
        read_torch_file(tmp_path / "junk.pt")
    assert not ei.value.unsafe and "truncated or corrupt" in str(ei.value)
