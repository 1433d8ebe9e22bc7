"""Body-model loading: safe .pkl reading, .npz and checkpoint routes, validation messages.

All model data is synthetic (tests/engine/fixtures/fake_smpl.py); one official-style
.pkl (~40 MB) is written per session and shared.
"""
import dataclasses
import os
import pickle
import shutil
import warnings

import numpy as np
import pytest

from engine.body.loading import (
    BodyModelError, body_model_from_state_dict, load_body_model, missing_joints_49,
    save_body_model_npz, to_smplx_struct, validate_body_model,
)
from engine.body.safe_pickle import UnsafePickleError, load_smpl_pickle
from engine.common import smpl_topology as topo
from tests.engine.fixtures import fake_smpl

torch = pytest.importorskip("torch")
smplx = pytest.importorskip("smplx")

PREFIX = "regressor.0.smpl."


# --- session fixtures ----------------------------------------------------------------------
@pytest.fixture(scope="session")
def fake_pkl(tmp_path_factory):
    """(path, source arrays) of the official-style synthetic neutral model."""
    path = tmp_path_factory.mktemp("smpl") / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    src = fake_smpl.write_fake_smpl_pkl(path, seed=0)
    return path, src


@pytest.fixture(scope="session")
def fake_data(fake_pkl):
    return load_body_model(fake_pkl[0])


@pytest.fixture(scope="session")
def fake_npz(fake_data, tmp_path_factory):
    path = tmp_path_factory.mktemp("npz") / "SMPL_NEUTRAL.npz"
    save_body_model_npz(fake_data, path, compressed=False)
    return path


@pytest.fixture(scope="session")
def extra_regressor():
    rng = np.random.default_rng(7)
    extra = rng.uniform(0, 1, (9, topo.NUM_VERTICES)).astype(np.float32)
    return extra / extra.sum(1, keepdims=True)


@pytest.fixture(scope="session")
def checkpoints(fake_data, extra_regressor, tmp_path_factory):
    """A PyMAF-style state dict saved in the zip format (under 'model') and the legacy one."""
    model = smplx.SMPL(model_path="unused", data_struct=to_smplx_struct(fake_data),
                       create_transl=False, batch_size=64)
    model.register_buffer("J_regressor_extra", torch.tensor(extra_regressor))
    sd = {PREFIX + k: v for k, v in model.state_dict().items()}
    sd["regressor.0.fc1.weight"] = torch.zeros(4, 4)
    folder = tmp_path_factory.mktemp("ckpt")
    zip_path, legacy_path = folder / "PyMAF_model_checkpoint.pt", folder / "legacy.pth"
    torch.save({"model": sd, "epoch": 3}, zip_path)
    torch.save(sd, legacy_path, _use_new_zipfile_serialization=False)
    return {"zip": zip_path, "legacy": legacy_path, "state_dict": sd}


def smplx_vertices(data, betas, body_pose, global_orient):
    model = smplx.SMPL(model_path="unused", data_struct=to_smplx_struct(data), create_transl=False)
    with torch.no_grad():
        out = model(betas=torch.tensor(betas), body_pose=torch.tensor(body_pose),
                    global_orient=torch.tensor(global_orient))
    return out.vertices.numpy()


def write_npz(path, arrays):
    np.savez(path, **arrays)
    return path


def small_model_arrays(V=100, J=24, B=10, F=50, seed=0):
    rng = np.random.default_rng(seed)
    parents = np.array(list(topo.SMPL_PARENTS) + list(range(J - 24)) if J > 24 else topo.SMPL_PARENTS[:J])
    return {
        "v_template": rng.normal(size=(V, 3)), "shapedirs": rng.normal(size=(V, 3, B)) * 0.01,
        "posedirs": rng.normal(size=(V, 3, 207)) * 0.01, "J_regressor": np.full((J, V), 1.0 / V),
        "weights": np.full((V, J), 1.0 / J),
        "kintree_table": np.stack([parents[:J], np.arange(J)]),
        "f": rng.integers(0, V, (F, 3)).astype(np.uint32),
    }


# --- (a) the official-style pickle ----------------------------------------------------------
def test_plain_pickle_needs_chumpy_like_a_real_file(fake_pkl):
    with open(fake_pkl[0], "rb") as fh, pytest.raises(ModuleNotFoundError, match="No module named 'chumpy'"):
        pickle.load(fh, encoding="latin1")


def test_safe_pickle_reads_exact_values_without_imports(fake_pkl):
    path, src = fake_pkl
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy.core DeprecationWarning
        loaded = load_smpl_pickle(path)
    assert set(loaded) == set(src)
    for key, value in src.items():
        if isinstance(value, str):
            assert loaded[key] == value
        else:
            assert isinstance(loaded[key], np.ndarray), key
            assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape, key
            np.testing.assert_array_equal(loaded[key], value, err_msg=key)
    assert loaded["shapedirs"].shape == (6890, 3, 10)
    assert loaded["J_regressor"].shape == (24, 6890)  # sparse csc -> dense, exact
    import sys
    assert not any(m == "chumpy" or m.startswith("chumpy.") for m in sys.modules)


def test_safe_pickle_reads_file_objects_and_protocol_1(tmp_path):
    src = fake_smpl.make_fake_smpl_arrays(seed=3)
    path = tmp_path / "proto1.pkl"
    fake_smpl.write_fake_smpl_pkl(path, src, protocol=1)  # objects via copy_reg._reconstructor
    with open(path, "rb") as fh:
        loaded = load_smpl_pickle(fh)
    np.testing.assert_array_equal(loaded["shapedirs"], src["shapedirs"])
    np.testing.assert_array_equal(loaded["J_regressor"], src["J_regressor"])


def test_safe_pickle_csr_and_modern_scipy(tmp_path):
    sp = pytest.importorskip("scipy.sparse")
    dense = np.zeros((5, 7))
    dense[[0, 2, 4, 4], [1, 6, 0, 3]] = [1.5, -2.0, 3.0, 4.0]

    class FakeCsr:
        def __getstate__(self):
            m = sp.csr_matrix(dense)
            return {"_shape": dense.shape, "maxprint": 50, "format": "csr", "data": m.data,
                    "indices": m.indices, "indptr": m.indptr}

    names = dict(fake_smpl.OFFICIAL_GLOBALS)
    names[FakeCsr] = ("scipy.sparse.csr", "csr_matrix")
    path = tmp_path / "csr.pkl"
    fake_smpl._dump_py2({"J_regressor": FakeCsr()}, path, names)
    np.testing.assert_array_equal(load_smpl_pickle(path)["J_regressor"], dense)

    # A chumpy-free file re-saved from Python 3 with real scipy objects (scipy.sparse._csc).
    modern = tmp_path / "modern.pkl"
    with open(modern, "wb") as fh:
        pickle.dump({"J_regressor": sp.csc_matrix(dense), "x": np.arange(3.0)}, fh, protocol=2)
    loaded = load_smpl_pickle(modern)
    np.testing.assert_array_equal(loaded["J_regressor"], dense)
    np.testing.assert_array_equal(loaded["x"], np.arange(3.0))


# --- (b) every route gives the same body ---------------------------------------------------------
def test_pkl_npz_and_checkpoints_give_identical_vertices(fake_pkl, fake_data, fake_npz, checkpoints,
                                                         extra_regressor, tmp_path):
    from_npz = load_body_model(fake_npz)
    from_zip = load_body_model(checkpoints["zip"])
    from_legacy = load_body_model(checkpoints["legacy"])
    # content sniffing, not the extension, decides
    odd_name = tmp_path / "weights.bin"
    os.symlink(checkpoints["legacy"], odd_name)
    from_odd = load_body_model(odd_name)
    from_sd = body_model_from_state_dict(
        {k: v.numpy() for k, v in checkpoints["state_dict"].items()}, prefix=PREFIX)

    sources = {"npz": from_npz, "zip": from_zip, "legacy": from_legacy, "odd": from_odd, "sd": from_sd}
    for name, data in sources.items():
        for field in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "parents", "faces"):
            np.testing.assert_array_equal(getattr(data, field), getattr(fake_data, field),
                                          err_msg=f"{name}.{field}")
        assert data.warnings == [], name
    for data in (from_zip, from_legacy, from_sd):
        np.testing.assert_array_equal(data.J_regressor_extra, extra_regressor)
        assert missing_joints_49(data) == []
    assert fake_data.J_regressor_extra is None and from_npz.J_regressor_extra is None

    rng = np.random.default_rng(1)
    betas = rng.normal(size=(4, 10)).astype(np.float32)
    body_pose = (0.4 * rng.normal(size=(4, 69))).astype(np.float32)
    orient = rng.normal(size=(4, 3)).astype(np.float32)
    reference = smplx_vertices(fake_data, betas, body_pose, orient)
    assert reference.shape == (4, 6890, 3) and np.isfinite(reference).all()
    for name, data in sources.items():
        np.testing.assert_allclose(smplx_vertices(data, betas, body_pose, orient), reference,
                                   rtol=0, atol=1e-6, err_msg=name)

    # the raw file path through smplx's own reader is impossible (chumpy), ours matches a
    # direct float64 LBS of the fixture's source arrays at zero pose
    src = fake_pkl[1]
    zero = smplx_vertices(fake_data, betas, np.zeros_like(body_pose), np.zeros_like(orient))
    expected = src["v_template"][None] + np.einsum("bl,vcl->bvc", betas.astype(np.float64), src["shapedirs"])
    np.testing.assert_allclose(zero, expected, atol=1e-5)


def test_state_dict_prefix_errors(checkpoints):
    with pytest.raises(BodyModelError, match=r"'regressor\.2\.smpl\.v_template'.*regressor\.0\.smpl\."):
        body_model_from_state_dict({k: v for k, v in checkpoints["state_dict"].items()
                                    if k.startswith(PREFIX)}, prefix="regressor.2.smpl.")


def test_checkpoint_without_body_or_with_objects(tmp_path, checkpoints):
    empty = tmp_path / "resnet.pt"
    torch.save({"model": {"conv1.weight": torch.zeros(1)}}, empty)
    with pytest.raises(BodyModelError, match="embeds no SMPL body model"):
        load_body_model(empty)

    with_object = tmp_path / "objects.pth"
    torch.save({"model": checkpoints["state_dict"], "cfg": _NotATensor()}, with_object)
    with pytest.raises(BodyModelError, match="could run code"):
        load_body_model(with_object)


class _NotATensor:
    pass


def test_save_npz_is_atomic_and_overwrites(fake_data, tmp_path):
    target = tmp_path / "model.npz"
    target.write_bytes(b"old")
    save_body_model_npz(fake_data, target)
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]
    reloaded = load_body_model(target)
    np.testing.assert_array_equal(reloaded.posedirs, fake_data.posedirs)


# --- (c) malicious pickles -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", fake_smpl.MALICIOUS_KINDS)
def test_malicious_pickle_is_refused(tmp_path, kind):
    marker = tmp_path / "pwned"
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    fake_smpl.write_malicious_pickle(path, marker, kind)
    with pytest.raises(UnsafePickleError, match=f"refused global '{kind}'"):
        load_smpl_pickle(path)
    assert not marker.exists()
    with pytest.raises(BodyModelError, match=f"'{kind}'") as info:
        load_body_model(path)
    assert isinstance(info.value.__cause__, UnsafePickleError)
    assert not marker.exists()


def test_unsafe_structures_are_refused(tmp_path):
    class Derived:  # chumpy.ch_ops.add has no 'x' in its state
        def __getstate__(self):
            return {"a": 1, "b": 2}

    names = dict(fake_smpl.OFFICIAL_GLOBALS)
    names[Derived] = ("chumpy.ch_ops", "add")
    derived = tmp_path / "derived.pkl"
    fake_smpl._dump_py2({"shapedirs": Derived()}, derived, names)
    with pytest.raises(UnsafePickleError, match="derived chumpy expression, not supported"):
        load_smpl_pickle(derived)

    listed = tmp_path / "list.pkl"
    listed.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(UnsafePickleError, match="not a dict"):
        load_smpl_pickle(listed)

    with pytest.raises(UnsafePickleError, match="limit"):
        load_smpl_pickle(derived, max_bytes=64)
    with open(derived, "rb") as fh, pytest.raises(UnsafePickleError, match="larger than"):
        load_smpl_pickle(fh, max_bytes=64)


def _global(module, name):
    return b"c" + f"{module}\n{name}\n".encode()


def _key(text):
    return b"X" + len(text).to_bytes(4, "little") + text.encode()


def test_allowed_globals_cannot_be_abused(tmp_path):
    """The allowed numpy names only rebuild arrays: no direct huge allocations."""
    # numpy.ndarray((10**12,)) called directly
    direct = b"\x80\x02}" + _key("a") + _global("numpy", "ndarray") + b"\x8a\x05\x00\x10\xa5\xd4\xe8\x85Rs."
    # _reconstruct(ndarray, (10**12,), 'b')
    reconstruct = (b"\x80\x02}" + _key("a") + _global("numpy.core.multiarray", "_reconstruct")
                   + _global("numpy", "ndarray") + b"\x8a\x05\x00\x10\xa5\xd4\xe8\x85" + _key("b")
                   + b"\x87Rs.")
    for name, payload, error, message in (
            ("direct.pkl", direct, TypeError, "not an SMPL model file"),
            ("reconstruct.pkl", reconstruct, UnsafePickleError, "initial shape .* refused")):
        path = tmp_path / name
        path.write_bytes(payload)
        with pytest.raises(error):
            load_smpl_pickle(path)
        with pytest.raises(BodyModelError, match=message):
            load_body_model(path)

    nested = []
    for _ in range(60):  # shared references: 2**60 paths if walked naively
        nested = [nested, nested]
    path = tmp_path / "nested.pkl"
    path.write_bytes(pickle.dumps({"v_template": nested}, protocol=2))
    with pytest.raises(UnsafePickleError, match="nested more than"):
        load_smpl_pickle(path)


# --- (d) messages that name the problem -------------------------------------------------------------
def test_wrong_vertex_count(tmp_path):
    path = write_npz(tmp_path / "blob.npz", small_model_arrays(V=100))
    with pytest.raises(BodyModelError, match="100 vertices, not SMPL topology"):
        load_body_model(path)


def test_smplx_and_smplh_are_recognised(fake_data, tmp_path):
    smplx_like = small_model_arrays(V=50)
    smplx_like["v_template"] = np.zeros((10475, 3))
    smplx_like["J_regressor"] = np.zeros((55, 10475), np.float32)
    smplx_like["hands_componentsl"] = np.zeros((45, 45))
    with pytest.raises(BodyModelError, match=r"SMPL-X \(or SMPL\+H\) model; PyMAF needs the SMPL neutral model"):
        load_body_model(write_npz(tmp_path / "SMPLX_NEUTRAL.npz", smplx_like))

    # SMPL+H as a Python-3 pickle (numpy._core names, _codecs.encode bytes)
    smplh = small_model_arrays(V=50, J=52, F=10)
    smplh["v_template"] = np.zeros((6890, 3))
    smplh["hands_componentsl"] = np.zeros((45, 45))
    path = tmp_path / "SMPLH_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps(smplh, protocol=2))
    with pytest.raises(BodyModelError, match=r"SMPL-X \(or SMPL\+H\).*52 joints.*'hands_componentsl'"):
        load_body_model(path)

    # validate_body_model alone (sizes only): 55 joints
    with pytest.raises(BodyModelError, match=r"SMPL-X \(or SMPL\+H\).*55 joints"):
        validate_body_model(dataclasses.replace(fake_data, J_regressor=np.zeros((55, 6890))))


def test_300_components_warn_and_truncate(fake_data, tmp_path):
    arrays = fake_data.to_npz_dict()
    rng = np.random.default_rng(5)
    arrays["shapedirs"] = np.concatenate(
        [arrays["shapedirs"], rng.normal(size=(6890, 3, 290)).astype(np.float32)], axis=2)
    data = load_body_model(write_npz(tmp_path / "basicmodel_neutral_lbs_300.npz", arrays))
    assert data.shapedirs.shape == (6890, 3, 10)
    np.testing.assert_array_equal(data.shapedirs, arrays["shapedirs"][:, :, :10])
    assert len(data.warnings) == 1
    assert "300 shape components" in data.warnings[0] and "10-component neutral" in data.warnings[0]


def test_too_few_components(fake_data, tmp_path):
    arrays = fake_data.to_npz_dict()
    arrays["shapedirs"] = arrays["shapedirs"][:, :, :5]
    with pytest.raises(BodyModelError, match="only 5 shape components"):
        load_body_model(write_npz(tmp_path / "five.npz", arrays))


@pytest.mark.parametrize("name", ["noise.pkl", "noise.npz", "noise.bin", "noise.pt"])
def test_random_bytes(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(11).bytes(4096))
    with pytest.raises(BodyModelError, match="not an SMPL model file"):
        load_body_model(path)


def test_truncated_pickle(fake_pkl, tmp_path):
    path = tmp_path / "cut.pkl"
    with open(fake_pkl[0], "rb") as fh:
        path.write_bytes(fh.read(os.path.getsize(fake_pkl[0]) * 6 // 10))
    with pytest.raises(BodyModelError, match="truncated"):
        load_body_model(path)


def test_missing_key_and_shape_mismatch(fake_data, tmp_path):
    arrays = fake_data.to_npz_dict()
    del arrays["weights"]
    with pytest.raises(BodyModelError, match="missing required entries 'weights'"):
        load_body_model(write_npz(tmp_path / "noweights.npz", arrays))

    arrays = fake_data.to_npz_dict()
    arrays["posedirs"] = arrays["posedirs"][:, :, :200]
    arrays["weights"] = arrays["weights"][:, :23]
    with pytest.raises(BodyModelError, match=r"posedirs expected \(6890, 3, 207\), got \(6890, 3, 200\)"
                                             r".*weights expected \(6890, 24\), got \(6890, 23\)"):
        load_body_model(write_npz(tmp_path / "badshapes.npz", arrays))

    with pytest.raises(BodyModelError, match="none of the SMPL entries"):
        load_body_model(write_npz(tmp_path / "other.npz", {"a": np.zeros(3)}))


def test_gender_warnings(fake_npz, fake_pkl, tmp_path):
    for fname, gender in (("SMPL_MALE.npz", "MALE"), ("basicModel_f_lbs_10_207_0_v1.0.0.npz", "FEMALE")):
        link = tmp_path / fname
        os.symlink(fake_npz, link)
        data = load_body_model(link)
        assert any(f"the {gender} SMPL model" in w for w in data.warnings), data.warnings

    src = dict(fake_pkl[1])
    src["gender"] = "female"
    path = tmp_path / "model.pkl"
    fake_smpl.write_fake_smpl_pkl(path, src)
    data = load_body_model(path)
    assert any("FEMALE" in w and "'gender' entry" in w for w in data.warnings), data.warnings


def test_extra_regressor_companion(fake_pkl, extra_regressor, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    model = folder / "SMPL_NEUTRAL.pkl"
    os.symlink(fake_pkl[0], model)

    graphcmr = tmp_path / "graphcmr_J_regressor_extra.npy"
    np.save(graphcmr, np.zeros((14, 6890), np.float32))
    with pytest.raises(BodyModelError, match=r"\(14, 6890\).*GraphCMR"):
        load_body_model(model, j_regressor_extra=graphcmr)

    shutil.copy(graphcmr, folder / "J_regressor_extra.npy")  # a wrong sibling only warns
    data = load_body_model(model)
    assert data.J_regressor_extra is None
    assert any("GraphCMR" in w for w in data.warnings)

    np.save(folder / "J_regressor_extra.npy", extra_regressor)
    data = load_body_model(model)
    np.testing.assert_array_equal(data.J_regressor_extra, extra_regressor)
    assert missing_joints_49(data) == [] and data.warnings == []


# --- (e) joints that need J_regressor_extra ---------------------------------------------------------
def test_missing_joints_49(fake_data):
    assert missing_joints_49(fake_data) == [
        "R hip", "L hip", "Neck (LSP)", "Head-top (LSP)", "Pelvis (MPII)", "Thorax (MPII)",
        "Spine (H36M)", "Jaw (H36M)", "Head (H36M)",
    ]
