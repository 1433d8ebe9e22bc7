"""The in-memory form of an SMPL-format body model (numpy only).

Every source (official SMPL ``.pkl``, ``.npz``, the arrays embedded in a PyMAF
checkpoint, the project's mannequin) is turned into one ``BodyModelData``; smplx is
then built from it with ``data_struct=`` (see ``engine.body.smpl_torch``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class BodyModelData:
    """SMPL-format arrays, float32 unless noted. V vertices, J = 24 joints.

    v_template:         (V, 3)       rest-pose template, y-up, metres
    shapedirs:          (V, 3, B)    shape blend shapes (B = 10 for PyMAF)
    posedirs:           (V, 3, 207)  pose-corrective blend shapes (the file layout,
                                     not smplx's transposed (207, 3V) buffer)
    J_regressor:        (J, V)       joint regressor
    weights:            (V, J)       linear-blend-skinning weights
    parents:            (J,) int64   kinematic tree, parents[0] = -1
    faces:              (F, 3) int64 triangles
    J_regressor_extra:  (9, V) or None  SPIN's extra joints (45..53 of the 54-set)
    vertex_parts:       (V,) uint8 or None  body part per vertex, DensePose's 24 parts (1..24)
    vertex_uv:          (V, 2) float32 or None  per-part surface coordinates in [0, 1]
                        (the parts and UV are the IUV auxiliary task's labels; see
                        engine.render.surface)
    source:             human-readable origin, used in messages
    warnings:           problems that did not stop loading (shown to the user)
    """

    v_template: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    weights: np.ndarray
    parents: np.ndarray
    faces: np.ndarray
    J_regressor_extra: Optional[np.ndarray] = None
    vertex_parts: Optional[np.ndarray] = None
    vertex_uv: Optional[np.ndarray] = None
    source: str = ""
    warnings: list = field(default_factory=list)

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def num_betas(self) -> int:
        return int(self.shapedirs.shape[-1])

    def rest_shape(self, betas) -> tuple:
        """Rest mesh and joints for a shape: betas (B,) -> (vertices (V, 3), joints (J, 3)),
        float64, SMPL body frame. The joints are what smplx's forward kinematics starts from."""
        from engine.common.kinematics import regress_joints, shaped_vertices

        verts = shaped_vertices(self.v_template, self.shapedirs, betas)
        return verts, regress_joints(self.J_regressor, verts)

    def kintree_table(self) -> np.ndarray:
        """(2, J) SMPL file layout: row 0 parents (root as 2**32-1), row 1 joint ids."""
        parents = self.parents.astype(np.int64).copy()
        parents[parents < 0] = 2**32 - 1
        return np.stack([parents, np.arange(len(parents))]).astype(np.uint32)

    # --- .npz form: smplx's attribute names, plain arrays, no pickles -----------------
    def to_npz_dict(self) -> dict:
        """Arrays under smplx's ``data_struct`` names (``f``, ``weights``, ``kintree_table``)."""
        out = {
            "v_template": self.v_template.astype(np.float32),
            "shapedirs": self.shapedirs.astype(np.float32),
            "posedirs": self.posedirs.astype(np.float32),
            "J_regressor": self.J_regressor.astype(np.float32),
            "weights": self.weights.astype(np.float32),
            "kintree_table": self.kintree_table(),
            "f": self.faces.astype(np.int64),
        }
        if self.J_regressor_extra is not None:
            out["J_regressor_extra"] = self.J_regressor_extra.astype(np.float32)
        if self.vertex_parts is not None:
            out["vertex_parts"] = self.vertex_parts.astype(np.uint8)
        if self.vertex_uv is not None:
            out["vertex_uv"] = self.vertex_uv.astype(np.float32)
        return out

    def save_npz(self, path) -> None:
        np.savez_compressed(path, **self.to_npz_dict())

    @classmethod
    def from_npz_dict(cls, arrays, source: str = "") -> "BodyModelData":
        """Inverse of ``to_npz_dict``; no validation (see ``engine.body.loading``)."""
        parents = np.asarray(arrays["kintree_table"])[0].astype(np.int64)
        parents[0] = -1
        optional = {k: (np.asarray(arrays[k]) if k in arrays else None)
                    for k in ("J_regressor_extra", "vertex_parts", "vertex_uv")}
        extra = optional["J_regressor_extra"]
        return cls(
            v_template=np.asarray(arrays["v_template"], np.float32),
            shapedirs=np.asarray(arrays["shapedirs"], np.float32),
            posedirs=np.asarray(arrays["posedirs"], np.float32),
            J_regressor=np.asarray(arrays["J_regressor"], np.float32),
            weights=np.asarray(arrays["weights"], np.float32),
            parents=parents,
            faces=np.asarray(arrays["f"]).astype(np.int64),
            J_regressor_extra=None if extra is None else np.asarray(extra, np.float32),
            vertex_parts=None if optional["vertex_parts"] is None else optional["vertex_parts"].astype(np.uint8),
            vertex_uv=None if optional["vertex_uv"] is None else optional["vertex_uv"].astype(np.float32),
            source=source,
        )
