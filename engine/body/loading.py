"""Load an SMPL body model from any of the forms users have, safely, into ``BodyModelData``.

Sources, recognised by content first and extension second:

* the official SMPL ``.pkl`` (Python-2 pickle with chumpy/scipy objects), read by the
  restricted unpickler in ``engine.body.safe_pickle`` (no code from the file runs);
* ``.npz`` with smplx's names (``v_template, shapedirs, posedirs, J_regressor, weights,
  kintree_table, f``), read without pickles;
* a PyMAF/SPIN checkpoint (``.pt/.pth/.tar``) embedding the SMPL buffers under
  ``regressor.0.smpl.*``, read with ``torch.load(weights_only=True)``.

Every result goes through ``validate_body_model``: anything that is not the SMPL
topology PyMAF was trained with raises ``BodyModelError`` with a message naming the
problem; tolerable oddities (300 shape components, a gendered model) become
``data.warnings``.
"""
from __future__ import annotations

import dataclasses
import os
import re
import zipfile
from typing import Mapping, Optional, Union

import numpy as np

from engine.body.model_data import BodyModelData
from engine.body.safe_pickle import UnsafePickleError, load_smpl_pickle
from engine.common.atomic import atomic_file
from engine.common import smpl_topology as topo
from engine.safe_torch import MAX_BYTES as MAX_CHECKPOINT_BYTES, TorchFileError, read_torch_file

__all__ = [
    "BodyModelError", "load_body_model", "body_model_from_state_dict", "validate_body_model",
    "missing_joints_49", "to_smplx_struct", "save_body_model_npz", "REQUIRED_FILE_KEYS",
]

PathLike = Union[str, os.PathLike]

# smplx's data_struct names, as in the official .pkl and our .npz.
REQUIRED_FILE_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights",
                      "kintree_table", "f")
# state-dict buffer name (smplx.SMPL) -> BodyModelData field.
STATE_DICT_KEYS = {"v_template": "v_template", "shapedirs": "shapedirs", "posedirs": "posedirs",
                   "J_regressor": "J_regressor", "lbs_weights": "weights", "parents": "parents",
                   "faces_tensor": "faces"}
# Entries only SMPL+H / SMPL-X / MANO / FLAME files have.
HAND_FACE_KEYS = ("hands_componentsl", "hands_componentsr", "hands_meanl", "hands_meanr",
                  "hands_coeffsl", "hands_coeffsr", "lmk_faces_idx", "lmk_bary_coords",
                  "dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords", "joint2num", "part2num")

NUM_EXTRA = len(topo.EXTRA_JOINT_NAMES)  # 9 rows of SPIN's J_regressor_extra
MAX_NPZ_BYTES = 1 << 30                   # uncompressed; SMPL arrays are ~60 MB
EXTRA_REGRESSOR_FILE = "J_regressor_extra.npy"
NEUTRAL_HINT = ("use the 10-component neutral SMPL, e.g. basicModel_neutral_lbs_10_207_0_v1.0.0.pkl "
                "or SMPL_NEUTRAL.pkl")

# Pickled by torch.save (legacy format) before anything else: protocol 2 + magic number.
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


class BodyModelError(ValueError):
    """A body-model file that cannot be used; the message names the file and the problem."""


# --- small helpers -------------------------------------------------------------------------
def _name(source) -> str:
    return os.path.basename(os.fspath(source)) if source else "body model"


def _add_warning(warnings: list, text: str) -> None:
    if text not in warnings:
        warnings.append(text)


def _shape(a) -> tuple:
    return tuple(int(s) for s in np.shape(a))


def _to_numpy(value) -> np.ndarray:
    """torch tensor (any device/dtype) or array-like -> numpy array."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()  # bfloat16/half have no numpy twin
        return value.numpy()
    return np.asarray(value)


class _RefusedObjectArray:
    """Placeholder for an .npz entry holding Python objects (never unpickled)."""

    def __init__(self, key: str):
        self.key = key


def _numeric(value, key: str, source) -> np.ndarray:
    if isinstance(value, _RefusedObjectArray):
        raise BodyModelError(f"{_name(source)}: entry '{key}' holds Python objects (pickled data), "
                             "which are not loaded: not an SMPL model file")
    try:
        arr = _to_numpy(value)
    except Exception as exc:  # noqa: BLE001 - anything odd in an untrusted file
        raise BodyModelError(f"{_name(source)}: entry '{key}' is not an array ({exc})") from None
    if arr.dtype.kind not in "biuf":
        raise BodyModelError(
            f"{_name(source)}: entry '{key}' is not a numeric array (got {type(value).__name__} "
            f"of dtype {arr.dtype}): not an SMPL model file")
    return arr


def _graphcmr_note(shape) -> str:
    if tuple(shape) == (14, topo.NUM_VERTICES):
        return (" A (14, 6890) file of the same name is GraphCMR's regressor for the 14 LSP "
                "joints; PyMAF needs SPIN's J_regressor_extra.npy with 9 rows.")
    return ""


def _extra_regressor_problem(shape, num_vertices: int) -> Optional[str]:
    expected = (NUM_EXTRA, num_vertices)
    if tuple(shape) == expected:
        return None
    return (f"J_regressor_extra: expected shape {expected}, got {tuple(shape)}."
            + _graphcmr_note(shape))


def _gender_from_name(source) -> Optional[str]:
    """'male'/'female' from names like SMPL_MALE.pkl or basicModel_f_lbs_10_207_0_v1.0.0.pkl."""
    tokens = set(re.split(r"[^a-z0-9]+", _name(source).lower()))
    if tokens & {"female", "f"}:
        return "female"
    if tokens & {"male", "m"}:
        return "male"
    return None


def _gender_warning(gender: str, source, how: str) -> str:
    return (f"{_name(source)} looks like the {gender.upper()} SMPL model ({how}); PyMAF was trained "
            f"with the gender-neutral model, so body shape and joints will be off: {NEUTRAL_HINT}.")


def _family_problem(num_vertices: Optional[int], num_joints: Optional[int],
                    hand_face_keys=()) -> Optional[str]:
    """A message if sizes/keys identify a non-SMPL body model family, else None."""
    found = []  # only the facts that differ from SMPL
    if num_vertices is not None and num_vertices != topo.NUM_VERTICES:
        found.append(f"{num_vertices} vertices (SMPL: {topo.NUM_VERTICES})")
    if num_joints is not None and num_joints != topo.NUM_JOINTS:
        found.append(f"{num_joints} joints (SMPL: {topo.NUM_JOINTS})")
    if hand_face_keys:
        found.append("hand/face entries " + ", ".join(f"'{k}'" for k in hand_face_keys))
    detail = "found " + ", ".join(found)
    if num_vertices == 778:
        return f"this is a MANO hand model ({detail}); PyMAF needs the SMPL neutral model"
    if num_vertices == 5023:
        return f"this is a FLAME head model ({detail}); PyMAF needs the SMPL neutral model"
    if num_vertices == 10475 or num_joints in (52, 55) or hand_face_keys:
        return f"this is an SMPL-X (or SMPL+H) model; PyMAF needs the SMPL neutral model ({detail})"
    return None


# --- validation ------------------------------------------------------------------------------
def validate_body_model(data: BodyModelData) -> BodyModelData:
    """Check ``data`` is SMPL as PyMAF uses it; return a (possibly trimmed) copy.

    Errors (``BodyModelError``): another model family (SMPL-X/SMPL+H/MANO/FLAME), a vertex
    count other than 6890 ("not SMPL topology"), joints other than 24, fewer than 10 shape
    components, inconsistent array shapes (each named, expected vs got), non-finite values,
    face indices out of range, a kinematic tree other than SMPL's.
    Warnings (``data.warnings``): more than 10 shape components (first 10 kept), a male/
    female model (from the file name), skinning weights not summing to 1.
    """
    name = _name(data.source)
    warnings = list(data.warnings)
    v_template = np.asarray(data.v_template)
    if v_template.ndim != 2 or v_template.shape[1] != 3:
        raise BodyModelError(f"{name}: v_template has shape {_shape(v_template)}, expected (V, 3)")
    V = v_template.shape[0]
    J = data.J_regressor.shape[0] if np.ndim(data.J_regressor) == 2 else None

    family = _family_problem(V, J)
    if family:
        raise BodyModelError(f"{name}: {family}. {NEUTRAL_HINT[0].upper()}{NEUTRAL_HINT[1:]}.")
    if V != topo.NUM_VERTICES:
        raise BodyModelError(
            f"{name}: the model has {V} vertices, not SMPL topology (SMPL has {topo.NUM_VERTICES}); "
            f"PyMAF needs the SMPL neutral model.")
    if J is not None and J != topo.NUM_JOINTS:
        raise BodyModelError(
            f"{name}: the model has {J} joints (J_regressor rows); SMPL has {topo.NUM_JOINTS}.")

    shapedirs = np.asarray(data.shapedirs)
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (V, 3):
        raise BodyModelError(f"{name}: inconsistent array shapes: shapedirs expected "
                             f"({V}, 3, {topo.NUM_BETAS}), got {_shape(shapedirs)}")
    B = shapedirs.shape[2]
    if B < topo.NUM_BETAS:
        raise BodyModelError(
            f"{name}: the model has only {B} shape components; PyMAF needs {topo.NUM_BETAS} "
            f"(it was trained with the 10-component neutral SMPL).")
    if B > topo.NUM_BETAS:
        shapedirs = shapedirs[:, :, :topo.NUM_BETAS]
        _add_warning(warnings, (
            f"{name} has {B} shape components (SMPL 1.1 style); only the first 10 are used. "
            f"PyMAF was trained with the 10-component neutral SMPL, whose components need not "
            f"match these, so body shapes may be slightly off."))

    expected = {
        "posedirs": (V, 3, topo.NUM_POSE_BASIS),
        "J_regressor": (topo.NUM_JOINTS, V),
        "weights": (V, topo.NUM_JOINTS),
        "parents": (topo.NUM_JOINTS,),
        "faces": (topo.NUM_FACES, 3),
    }
    problems = [f"{key} expected {exp}, got {_shape(getattr(data, key))}"
                for key, exp in expected.items() if _shape(getattr(data, key)) != exp]
    if data.J_regressor_extra is not None:
        extra_problem = _extra_regressor_problem(_shape(data.J_regressor_extra), V)
        if extra_problem:
            problems.append(extra_problem)
    if problems:
        raise BodyModelError(f"{name}: inconsistent array shapes: " + "; ".join(problems))

    finite_checks = {"v_template": v_template, "shapedirs": shapedirs, "posedirs": data.posedirs,
                     "J_regressor": data.J_regressor, "weights": data.weights,
                     "J_regressor_extra": data.J_regressor_extra}
    for key, arr in finite_checks.items():
        if arr is not None and not np.all(np.isfinite(arr)):
            raise BodyModelError(f"{name}: {key} contains NaN or infinite values")

    faces = np.asarray(data.faces)
    if faces.dtype.kind not in "iu" or faces.min() < 0 or faces.max() >= V:
        raise BodyModelError(f"{name}: faces must be vertex indices in [0, {V}); "
                             f"got values in [{faces.min()}, {faces.max()}]")
    parents = np.asarray(data.parents).astype(np.int64)
    if not np.array_equal(parents, topo.SMPL_PARENTS):
        raise BodyModelError(f"{name}: the kinematic tree (parents {parents.tolist()}) is not "
                             f"SMPL's {topo.SMPL_PARENTS.tolist()}")

    row_sums = np.asarray(data.weights, np.float64).sum(axis=1)
    if np.max(np.abs(row_sums - 1.0)) > 1e-3:
        _add_warning(warnings, f"{name}: skinning weights do not sum to 1 per vertex "
                               f"(range {row_sums.min():.4f}..{row_sums.max():.4f})")
    gender = _gender_from_name(data.source)
    if gender:
        _add_warning(warnings, _gender_warning(gender, data.source, "from the file name"))

    return dataclasses.replace(
        data,
        v_template=v_template.astype(np.float32, copy=False),
        shapedirs=np.ascontiguousarray(shapedirs, dtype=np.float32),
        posedirs=np.asarray(data.posedirs, np.float32),
        J_regressor=np.asarray(data.J_regressor, np.float32),
        weights=np.asarray(data.weights, np.float32),
        parents=parents,
        faces=faces.astype(np.int64, copy=False),
        J_regressor_extra=(None if data.J_regressor_extra is None
                           else np.asarray(data.J_regressor_extra, np.float32)),
        warnings=warnings,
    )


def missing_joints_49(data: BodyModelData) -> list:
    """Names of the 49 output joints that need J_regressor_extra, if it is absent (else [])."""
    if data.J_regressor_extra is not None:
        return []
    return [topo.JOINT_NAMES_49[k] for k, src in enumerate(topo.JOINTS_49_SOURCE)
            if src >= topo.NUM_JOINTS + len(topo.VERTEX_JOINTS)]


# --- raw dict (pkl / npz) -> BodyModelData -----------------------------------------------------
def _data_from_file_dict(raw: Mapping, source) -> BodyModelData:
    """Arrays under smplx's names -> BodyModelData (unvalidated); family/missing-key errors."""
    name = _name(source)
    keys = [str(k) for k in raw.keys()]
    hand_face = [k for k in HAND_FACE_KEYS if k in raw]
    V = _shape(raw["v_template"])[0] if "v_template" in raw and np.ndim(raw["v_template"]) == 2 else None
    J = _shape(raw["J_regressor"])[0] if "J_regressor" in raw and np.ndim(raw["J_regressor"]) == 2 else None
    family = _family_problem(V, J, hand_face)
    if family:
        raise BodyModelError(f"{name}: {family}. {NEUTRAL_HINT[0].upper()}{NEUTRAL_HINT[1:]}.")

    missing = [k for k in REQUIRED_FILE_KEYS if k not in raw]
    if len(missing) == len(REQUIRED_FILE_KEYS):
        shown = ", ".join(f"'{k}'" for k in keys[:12]) + (", ..." if len(keys) > 12 else "")
        raise BodyModelError(f"{name} is not an SMPL model file: none of the SMPL entries "
                             f"({', '.join(REQUIRED_FILE_KEYS)}) is present; it holds {shown or 'nothing'}")
    if missing:
        raise BodyModelError(f"{name}: missing required entries " + ", ".join(f"'{k}'" for k in missing)
                             + f" (an SMPL model has {', '.join(REQUIRED_FILE_KEYS)})")

    arrays = {k: _numeric(raw[k], k, source) for k in REQUIRED_FILE_KEYS}
    kintree = arrays["kintree_table"]
    if kintree.ndim != 2 or kintree.shape[0] != 2:
        raise BodyModelError(f"{name}: inconsistent array shapes: kintree_table expected "
                             f"(2, {topo.NUM_JOINTS}), got {_shape(kintree)}")
    if arrays["f"].dtype.kind not in "iu":
        raise BodyModelError(f"{name}: f (faces) must hold integer vertex indices, got {arrays['f'].dtype}")
    if "J_regressor_extra" in raw:
        arrays["J_regressor_extra"] = _numeric(raw["J_regressor_extra"], "J_regressor_extra", source)
    for key in ("vertex_parts", "vertex_uv"):  # optional IUV labels (engine.render.surface)
        if key in raw:
            arrays[key] = _numeric(raw[key], key, source)
    data = BodyModelData.from_npz_dict(arrays, source=os.fspath(source) if source else "")

    gender = raw.get("gender")
    if isinstance(gender, np.ndarray) and gender.ndim == 0:
        gender = gender.item()
    if isinstance(gender, bytes):
        gender = gender.decode("latin1")
    if isinstance(gender, str) and gender.strip().lower() in ("male", "female"):
        _add_warning(data.warnings,
                     _gender_warning(gender.strip().lower(), source, "its 'gender' entry"))
    return data


# --- state dict (checkpoint) -> BodyModelData ----------------------------------------------------
def body_model_from_state_dict(state_dict: Mapping, prefix: str = "regressor.0.smpl.",
                               *, source: str = "", validate: bool = True) -> BodyModelData:
    """SMPL buffers of a smplx.SMPL state dict (e.g. PyMAF's ``regressor.0.smpl.*``).

    Values may be torch tensors or numpy arrays. ``posedirs`` is stored transposed,
    (207, 3V) = reshape(posedirs_file, [-1, 207]).T, and is turned back into (V, 3, 207);
    ``lbs_weights`` -> weights, ``faces_tensor`` -> faces; ``J_regressor_extra`` (9, V) is
    attached when present. Validated unless ``validate=False``.
    """
    name = _name(source) if source else "state dict"
    missing = [prefix + k for k in STATE_DICT_KEYS if prefix + k not in state_dict]
    if missing:
        present = sorted({k[: -len("v_template")] for k in state_dict
                          if isinstance(k, str) and k.endswith("v_template")})
        hint = (f"; SMPL buffers exist under {', '.join(repr(p) for p in present)}" if present
                else "; it embeds no SMPL body model")
        raise BodyModelError(f"{name}: missing SMPL buffers " + ", ".join(f"'{k}'" for k in missing)
                             + hint)
    arrays = {field: _numeric(state_dict[prefix + key], prefix + key, source or name)
              for key, field in STATE_DICT_KEYS.items()}

    V = arrays["v_template"].shape[0] if arrays["v_template"].ndim == 2 else -1
    posedirs = arrays["posedirs"]
    if posedirs.ndim == 2:  # smplx buffer layout (P, 3V) -> file layout (V, 3, P)
        if posedirs.shape[1] != 3 * V:
            raise BodyModelError(f"{name}: inconsistent array shapes: {prefix}posedirs expected "
                                 f"({topo.NUM_POSE_BASIS}, {3 * V}), got {_shape(posedirs)}")
        arrays["posedirs"] = posedirs.T.reshape(V, 3, posedirs.shape[0])
    extra_key = prefix + "J_regressor_extra"
    extra = _numeric(state_dict[extra_key], extra_key, source or name) if extra_key in state_dict else None
    data = BodyModelData(
        v_template=arrays["v_template"].astype(np.float32),
        shapedirs=arrays["shapedirs"].astype(np.float32),
        posedirs=arrays["posedirs"].astype(np.float32),
        J_regressor=arrays["J_regressor"].astype(np.float32),
        weights=arrays["weights"].astype(np.float32),
        parents=arrays["parents"].astype(np.int64).reshape(-1),
        faces=arrays["faces"].astype(np.int64),
        J_regressor_extra=None if extra is None else extra.astype(np.float32),
        source=f"{source} [{prefix}*]" if source else f"[{prefix}*]",
    )
    return validate_body_model(data) if validate else data


# --- file readers ------------------------------------------------------------------------------
def _read_npy(fh, key: str, declared_bytes: int, source):
    """One .npy stream -> array; object arrays -> ``_RefusedObjectArray`` (never unpickled).

    Headers promising more data than the entry stores are refused before allocating.
    """
    name = _name(source)
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise BodyModelError(f"{name}: entry '{key}' uses unsupported .npy format {version}")
    if dtype.hasobject:  # would need unpickling: keep only the name (used to identify SMPL-X)
        return _RefusedObjectArray(key)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes > declared_bytes:
        raise BodyModelError(f"{name}: entry '{key}' claims {nbytes} bytes but stores fewer: corrupt file")
    data = fh.read(nbytes)
    if len(data) != nbytes:
        raise BodyModelError(f"{name}: entry '{key}' is truncated")
    arr = np.frombuffer(data, dtype=dtype)
    return arr.reshape(shape, order="F" if fortran else "C").copy()


def _read_npz(path) -> dict:
    name = _name(path)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = [i for i in zf.infolist() if i.filename.endswith(".npy")]
            if not infos:
                raise BodyModelError(f"{name} is not an SMPL model file: a zip archive without .npy arrays")
            total = sum(i.file_size for i in infos)
            if total > MAX_NPZ_BYTES:
                raise BodyModelError(f"{name}: {total} bytes of arrays, over the {MAX_NPZ_BYTES}-byte "
                                     "limit: not an SMPL model file")
            out = {}
            for info in infos:
                key = info.filename[: -len(".npy")]
                with zf.open(info) as fh:
                    out[key] = _read_npy(fh, key, info.file_size, path)
            return out
    except BodyModelError:
        raise
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, NotImplementedError) as exc:
        raise BodyModelError(f"{name} is not an SMPL model file, or it is truncated/corrupt: "
                             f"reading it as .npz failed ({type(exc).__name__}: {exc})") from exc


def _read_pickle(path) -> dict:
    name = _name(path)
    try:
        return load_smpl_pickle(path)
    except UnsafePickleError as exc:
        raise BodyModelError(f"{name} was not loaded: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - an untrusted file can fail in many ways
        msg = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, EOFError) or "truncated" in str(exc) or "ran out of input" in str(exc).lower():
            raise BodyModelError(f"{name} is truncated or corrupt (the pickle data ends early: {msg}); "
                                 "it is not a usable SMPL model file, download or copy it again") from exc
        raise BodyModelError(f"{name} is not an SMPL model file: it could not be read as a pickle "
                             f"({msg})") from exc


def _read_checkpoint(path) -> Mapping:
    name = _name(path)
    try:
        obj = read_torch_file(path, max_bytes=MAX_CHECKPOINT_BYTES)
    except TorchFileError as exc:
        if exc.unsafe:
            raise BodyModelError(str(exc)) from exc
        raise BodyModelError(f"{name} is not an SMPL model file or a readable PyTorch checkpoint "
                             f"({exc})") from exc
    state = obj
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                state = obj[key]
                break
    if not isinstance(state, Mapping):
        raise BodyModelError(f"{name}: the checkpoint holds a {type(state).__name__}, not a state dict")
    return state


def _smpl_prefix(state: Mapping, preferred: str, source) -> str:
    """``preferred`` if present, else the shortest prefix owning a ``v_template`` buffer."""
    if preferred + "v_template" in state:
        return preferred
    found = sorted((k[: -len("v_template")] for k in state
                    if isinstance(k, str) and k.endswith("smpl.v_template")), key=len)
    if not found:
        raise BodyModelError(f"{_name(source)}: the checkpoint embeds no SMPL body model "
                             f"(no '{preferred}v_template'); choose an SMPL .pkl or .npz file")
    return found[0]


def _sniff(path) -> str:
    """'pickle' | 'npz' | 'checkpoint' | 'unknown' from the first bytes, then the extension."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return "unknown"
        if any(n.endswith("data.pkl") for n in names):
            return "checkpoint"  # torch zip format: <name>/data.pkl + <name>/data/<n>
        return "npz"
    if head.startswith(_TORCH_LEGACY_MAGIC) or head[257:262] == b"ustar":
        return "checkpoint"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if ext in (".pkl", ".pickle"):
        return "pickle"  # protocol 0/1 pickles have no header to recognise
    return "unknown"


def _find_in_folder(folder) -> str:
    for sub in ("", "smpl"):
        for fname in ("SMPL_NEUTRAL.npz", "SMPL_NEUTRAL.pkl",
                      "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl",
                      "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl"):
            candidate = os.path.join(folder, sub, fname)
            if os.path.isfile(candidate):
                return candidate
    raise BodyModelError(f"{folder} is a folder without SMPL_NEUTRAL.pkl/.npz; choose the model file itself")


def _load_extra_file(path, num_vertices: int) -> np.ndarray:
    name = _name(path)
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as fh:
            arr = _read_npy(fh, "J_regressor_extra", size, path)
    except BodyModelError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise BodyModelError(f"{name} is not a readable .npy array ({exc})") from exc
    arr = _numeric(arr, "J_regressor_extra", path)
    problem = _extra_regressor_problem(arr.shape, num_vertices)
    if problem:
        raise BodyModelError(f"{name}: {problem}")
    if not np.all(np.isfinite(arr)):
        raise BodyModelError(f"{name}: J_regressor_extra contains NaN or infinite values")
    return arr.astype(np.float32)


# --- public entry point --------------------------------------------------------------------------
def load_body_model(path: PathLike, j_regressor_extra: Optional[PathLike] = None,
                    *, prefix: str = "regressor.0.smpl.") -> BodyModelData:
    """Read and validate an SMPL body model from ``.pkl``, ``.npz`` or a PyMAF checkpoint.

    ``j_regressor_extra``: SPIN's ``J_regressor_extra.npy`` (9, V) to attach; without it, a
    file of that name next to a .pkl/.npz is used (a wrong one there only adds a warning),
    and a checkpoint's own ``<prefix>J_regressor_extra`` buffer is kept. ``prefix``: where
    a checkpoint's SMPL buffers live (another ``*smpl.`` prefix is found automatically).
    Raises ``BodyModelError`` naming the problem.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = _find_in_folder(path)
    if not os.path.isfile(path):
        raise BodyModelError(f"{path}: no such file")
    kind = _sniff(path)
    if kind == "pickle":
        data = _data_from_file_dict(_read_pickle(path), path)
    elif kind == "npz":
        data = _data_from_file_dict(_read_npz(path), path)
    elif kind == "checkpoint":
        state = _read_checkpoint(path)
        data = body_model_from_state_dict(state, _smpl_prefix(state, prefix, path),
                                          source=path, validate=False)
    else:
        raise BodyModelError(f"{_name(path)} is not an SMPL model file: expected an SMPL .pkl, an "
                             ".npz or a PyMAF checkpoint (.pt/.pth/.tar), and the content is none of these")

    V = data.num_vertices
    if j_regressor_extra is not None:
        data.J_regressor_extra = _load_extra_file(j_regressor_extra, V)
    elif kind in ("pickle", "npz") and data.J_regressor_extra is None:
        sibling = os.path.join(os.path.dirname(os.path.abspath(path)), EXTRA_REGRESSOR_FILE)
        if os.path.isfile(sibling):
            try:
                data.J_regressor_extra = _load_extra_file(sibling, V)
            except BodyModelError as exc:  # not asked for explicitly: report, don't fail
                _add_warning(data.warnings, f"{exc} It was ignored.")
    return validate_body_model(data)


# --- output --------------------------------------------------------------------------------------
def to_smplx_struct(data: BodyModelData):
    """An object for ``smplx.SMPL(model_path='unused', data_struct=..., create_transl=False)``."""
    try:
        from smplx.utils import Struct  # lazily: only tests and tools use smplx
    except ImportError:  # same duck type
        from types import SimpleNamespace as Struct
    return Struct(**data.to_npz_dict())


def save_body_model_npz(data: BodyModelData, path: PathLike, compressed: bool = True) -> None:
    """Write ``data.to_npz_dict()`` to ``path`` atomically (temporary file, then os.replace)."""
    with atomic_file(path) as fh:  # a file object: numpy does not append ".npz"
        (np.savez_compressed if compressed else np.savez)(fh, **data.to_npz_dict())
