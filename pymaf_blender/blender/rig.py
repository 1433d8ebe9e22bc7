"""One person's armature (SMPL's 24 joints) and skinned body mesh.

The armature is built standing in Blender's axes from the track's rest joints
(``blender_space.body_points_to_armature``), lifted so the rest body stands on Z = 0
(``blender_space.rest_on_floor``: the bind pose of the exports is on the floor), and its object
keeps the identity transform at the world origin, so armature space = world space (see
``blender_space``). Bone heads are the
joints; each bone points at a child joint (the spine for the pelvis, the neck for spine3, the
only child elsewhere); leaves (head, feet, hands) continue their parent's direction.
"""
from __future__ import annotations

import bpy
import numpy as np

from ..common import smpl_topology

BONE_NAMES = smpl_topology.SMPL_JOINT_NAMES
# Which child a bone with several children points at.
PREFERRED_CHILD = {"pelvis": "spine1", "spine3": "neck"}
LEAF_LENGTH = (0.5, 0.04, 0.15)  # leaf bone: 0.5 x parent bone length, clamped to [4, 15] cm
MIN_BONE_LENGTH = 1e-3           # Blender deletes zero-length bones on leaving edit mode
WEIGHT_EPS = 1e-6                # skinning weights at or below this are not written


def bone_tails(heads: np.ndarray, parents) -> np.ndarray:
    """Bone heads (J, 3) (armature space) + parents (J,) -> tails (J, 3)."""
    heads = np.asarray(heads, np.float64)
    parents = np.asarray(parents).astype(int)
    J = len(parents)
    children = {j: [c for c in range(J) if parents[c] == j] for j in range(J)}
    names = list(BONE_NAMES) if J == len(BONE_NAMES) else [str(j) for j in range(J)]
    tails = np.empty_like(heads)
    for j in range(J):
        kids = children[j]
        if kids:
            pref = PREFERRED_CHILD.get(names[j])
            c = names.index(pref) if pref in names and names.index(pref) in kids else kids[0]
            tails[j] = heads[c]
        else:
            p = parents[j]
            d = heads[j] - heads[p] if p >= 0 else np.array([0.0, 0.0, 0.1])
            length = np.linalg.norm(d)
            d = d / length if length > MIN_BONE_LENGTH else np.array([0.0, 0.0, 1.0])
            tails[j] = heads[j] + d * float(np.clip(LEAF_LENGTH[0] * length, *LEAF_LENGTH[1:]))
        if np.linalg.norm(tails[j] - heads[j]) < MIN_BONE_LENGTH:  # coincident joints
            tails[j] = heads[j] + np.array([0.0, 0.0, 0.05])
    return tails


def build_armature(context, collection, name: str, heads: np.ndarray, parents) -> bpy.types.Object:
    """Armature object ``name`` with one bone per joint (SMPL names), linked to ``collection``.

    heads (24, 3) in armature space. The object stays at the origin with identity transform."""
    parents = np.asarray(parents).astype(int)
    tails = bone_tails(heads, parents)
    arm = bpy.data.armatures.new(name)
    arm.display_type = "OCTAHEDRAL"
    obj = bpy.data.objects.new(name, arm)
    collection.objects.link(obj)
    obj.show_in_front = True
    view_layer = context.view_layer
    view_layer.objects.active = obj
    obj.select_set(True)
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        ebs = []
        for j, bone_name in enumerate(BONE_NAMES):
            eb = arm.edit_bones.new(bone_name)
            eb.head = heads[j].tolist()
            eb.tail = tails[j].tolist()
            eb.roll = 0.0
            eb.use_deform = True
            ebs.append(eb)
        for j, p in enumerate(parents):
            if p >= 0:
                ebs[j].parent = ebs[p]
                # Connected when the parent points at this joint (its tail is our head).
                ebs[j].use_connect = bool(np.allclose(tails[p], heads[j], atol=1e-9))
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
    for pb in obj.pose.bones:
        pb.rotation_mode = "QUATERNION"
    return obj


def bone_rest_matrices(arm_obj) -> np.ndarray:
    """(24, 3, 3) each bone's rest orientation in armature space, read back from Blender
    (``bone.matrix_local.to_3x3()``), in SMPL joint order."""
    bones = arm_obj.data.bones
    missing = [n for n in BONE_NAMES if n not in bones]
    if missing:
        raise ValueError(f"{arm_obj.name}: not a PyMAF rig (bones missing: {', '.join(missing)})")
    return np.array([np.array(bones[n].matrix_local.to_3x3(), np.float64) for n in BONE_NAMES])


def root_rest_head(arm_obj) -> np.ndarray:
    """(3,) the root bone's rest head in armature space (where the root motion is measured from)."""
    return np.array(arm_obj.data.bones[BONE_NAMES[0]].head_local, np.float64)


def build_body(collection, name: str, arm_obj, vertices: np.ndarray, faces: np.ndarray,
               weights: np.ndarray) -> bpy.types.Object:
    """Skinned body mesh: vertices (V, 3) armature space, faces (F, 3), weights (V, 24).

    One vertex group per bone (weights <= WEIGHT_EPS skipped), an Armature modifier (linear
    blend skinning, no preserve-volume) and the armature as parent."""
    V, F = len(vertices), len(faces)
    me = bpy.data.meshes.new(name)
    me.vertices.add(V)
    me.vertices.foreach_set("co", np.ascontiguousarray(vertices, np.float32).ravel())
    me.loops.add(3 * F)
    me.loops.foreach_set("vertex_index", np.ascontiguousarray(faces, np.int32).ravel())
    me.polygons.add(F)
    me.polygons.foreach_set("loop_start", np.arange(0, 3 * F, 3, dtype=np.int32))
    me.update(calc_edges=True)
    me.polygons.foreach_set("use_smooth", np.ones(F, bool))
    me.update()
    obj = bpy.data.objects.new(name, me)
    collection.objects.link(obj)
    w = np.asarray(weights, np.float64)
    for j, bone_name in enumerate(BONE_NAMES):
        vg = obj.vertex_groups.new(name=bone_name)
        idx = np.flatnonzero(w[:, j] > WEIGHT_EPS)
        if idx.size == 0:
            continue
        vals = w[idx, j]
        # Vertices that share a weight (e.g. 1.0 deep inside a limb) go in one call.
        uniq, inv, counts = np.unique(vals, return_inverse=True, return_counts=True)
        for k in np.flatnonzero(counts > 1):
            vg.add(idx[inv == k].tolist(), float(uniq[k]), "REPLACE")
        single = counts[inv] == 1
        add = vg.add
        for i, v in zip(idx[single].tolist(), vals[single].tolist()):
            add([i], v, "REPLACE")
    mod = obj.modifiers.new("Armature", "ARMATURE")
    mod.object = arm_obj
    mod.use_vertex_groups = True
    mod.use_bone_envelopes = False
    mod.use_deform_preserve_volume = False
    obj.parent = arm_obj
    return obj


def build_floor(collection, name: str, size: float) -> bpy.types.Object:
    """The floor: a ``size`` x ``size`` m plane at Z = 0 centred under the camera, drawn as wire
    in the viewport and a shadow catcher in Cycles renders (CG shadows on the plate)."""
    h = size / 2.0
    me = bpy.data.meshes.new(name)
    me.from_pydata([(-h, -h, 0.0), (h, -h, 0.0), (h, h, 0.0), (-h, h, 0.0)], [], [(0, 1, 2, 3)])
    me.update()
    obj = bpy.data.objects.new(name, me)
    collection.objects.link(obj)
    obj.display_type = "WIRE"
    obj.is_shadow_catcher = True
    return obj


def person_material(name: str, index: int) -> bpy.types.Material:
    """A plain material in the ``index``-th person's colour (``common.palette``; the overlay
    preview draws the person in the same colour). Viewport colour and Principled base colour."""
    from ..common.palette import person_color_srgb, srgb_to_linear

    rgb = srgb_to_linear(person_color_srgb(index))
    mat = bpy.data.materials.new(name)
    mat.diffuse_color = (*rgb, 1.0)
    if mat.node_tree is None:  # Blender 4.x; from 5.0 every material has nodes (use_nodes is deprecated)
        mat.use_nodes = True
    bsdf = next((n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED"), None)
    if bsdf is not None:
        bsdf.inputs["Base Color"].default_value = (*rgb, 1.0)
    mat["pymaf_color_srgb"] = list(person_color_srgb(index))
    return mat
