"""PyMAF (Zhang et al., ICCV 2021) as released: a ResNet trunk, a deconvolution feature
pyramid applied progressively, and a mesh alignment feedback loop of three stages, each
with a per-point MLP and a SPIN-style regressor that updates (pose6D, betas, cam).

Module and buffer names mirror the official release so its checkpoint loads with
``strict=True`` (spec: shared/reference/pymaf-architecture.md, checkpoint-layout.json).

Shapes: B batch, C=256 pyramid channels, N sampled points (441 grid / 431 vertices),
V mesh vertices. Cameras are crop cameras (s, tx, ty), see engine.common.camera.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.body.model_data import BodyModelData
from engine.body.smpl_torch import SMPL, VertexSubset
from engine.common import smpl_topology as topo
from engine.model.blaze_trunk import BlazeTrunk, neck_levels, trunk_input, trunk_size
from engine.model.geometry import project_to_crop, rot6d_to_rotmat, rotmat_to_axis_angle
from engine.model.resnet import ResNetTrunk

GRID_SIZE = 21
MLP_DIM = (256, 128, 64, 5)
NUM_STAGES = 3
POSE6D_DIM = 6 * topo.NUM_JOINTS  # 144


FEATURE_MODES = ("maf", "grid", "global")


@dataclass(frozen=True)
class ModelConfig:
    """What varies between PyMAF builds. The release: depth 50, IUV head on, 'maf', pyramid.

    feature_mode: 'maf'    the paper: grid features at stage 0, mesh-aligned after;
                  'grid'   grid features at every stage (Table 4 "grid");
                  'global' IEF baseline: one regressor on the pooled trunk features,
                           iterated once per stage with shared weights (Table 4 "global").
    use_pyramid:  False samples every stage from the same finest (56x56) map (Table 5).
    with_iuv_head: the auxiliary dense-correspondence head (Table 5 "aux").
    trunk:        'resnet' (the paper: a ResNet of ``backbone_depth`` and the deconvolution
                  pyramid), or 'blazepose-lite|full|heavy': the frozen BlazePose landmark
                  network's decoder maps (16/32/64 px, engine/model/blaze_trunk.py) lifted
                  to 256 channels by one trainable conv each; its weights are attached at
                  run time (``attach_trunk``), never saved with the heads.
    regressor_width: the regressors' hidden width (the release: 1024); narrower heads fit the
                  shipped-weights budget.
    Only the default layout matches the official checkpoint; the others are for training
    and ablations (their checkpoints carry their config).
    """

    backbone_depth: int = 50
    with_iuv_head: bool = True
    feature_mode: str = "maf"
    use_pyramid: bool = True
    trunk: str = "resnet"
    regressor_width: int = 1024

    def __post_init__(self):
        if self.feature_mode not in FEATURE_MODES:
            raise ValueError(f"feature_mode must be one of {FEATURE_MODES}, got {self.feature_mode!r}")
        if self.trunk != "resnet":
            trunk_size(self.trunk)   # raises for an unknown trunk

    @property
    def blaze(self) -> bool:
        return self.trunk != "resnet"

    @property
    def trunk_label(self) -> str:
        """What the network reads images with: "ResNet-50", "BlazePose full (frozen)"."""
        return f"BlazePose {trunk_size(self.trunk)} (frozen)" if self.blaze else f"ResNet-{self.backbone_depth}"

    def to_dict(self) -> dict:
        d = {"backbone_depth": self.backbone_depth, "with_iuv_head": self.with_iuv_head,
             "feature_mode": self.feature_mode, "use_pyramid": self.use_pyramid}
        if self.blaze:   # the official layout's config keeps its four keys
            d["trunk"] = self.trunk
        if self.regressor_width != 1024:
            d["regressor_width"] = self.regressor_width
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return cls(int(d.get("backbone_depth", 50)), bool(d.get("with_iuv_head", True)),
                   str(d.get("feature_mode", "maf")), bool(d.get("use_pyramid", True)),
                   str(d.get("trunk", "resnet")), int(d.get("regressor_width", 1024)))


# --- fixed sampling geometry ---------------------------------------------------------
def grid_points(size: int = GRID_SIZE) -> torch.Tensor:
    """Stage-0 sampling grid (1, 2, size*size) in [-1, 1]; point k = (x_{k//size}, y_{k%size}).

    x varies slowest ('ij' meshgrid), as in the release: regressor.0.fc1 is tied to it.
    """
    lin = torch.linspace(-1, 1, size)
    xv, yv = torch.meshgrid(lin, lin, indexing="ij")
    return torch.stack([xv.reshape(-1), yv.reshape(-1)]).unsqueeze(0)


def vertex_selection_matrix(vertex_ids: np.ndarray, num_vertices: int) -> torch.Tensor:
    """Dense 0/1 matrix (n, V) selecting ``vertex_ids`` (the release's ``Dmap`` buffer)."""
    dmap = torch.zeros(len(vertex_ids), num_vertices)
    dmap[torch.arange(len(vertex_ids)), torch.as_tensor(vertex_ids)] = 1.0
    return dmap


def sample_features(feature_map: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear features at points. (B, C, H, W), (B, N, 2) in [-1, 1] (x, y) -> (B, C, N).

    align_corners=True as in the release (±1 = centres of the border pixels).
    """
    sampled = F.grid_sample(feature_map, points.unsqueeze(2), mode="bilinear",
                            padding_mode="zeros", align_corners=True)
    return sampled.squeeze(3)


# --- modules -----------------------------------------------------------------------
def deconv_pyramid(in_channels: int) -> nn.Sequential:
    """3 x [ConvTranspose2d(k4, s2, p1, no bias) -> BN -> ReLU]: 7 -> 14 -> 28 -> 56."""
    layers = []
    for i in range(NUM_STAGES):
        layers += [
            nn.ConvTranspose2d(in_channels if i == 0 else 256, 256, kernel_size=4, stride=2,
                               padding=1, output_padding=0, bias=False),
            nn.BatchNorm2d(256, momentum=0.1),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class MAFExtractor(nn.Module):
    """Per-point MLP (Conv1d k=1) 256 -> 128 -> 64 -> 5 with the input re-fed as a skip.

    Holds ``Dmap`` (431, V), the release's vertex-selection buffer; the engine gathers by
    index instead of multiplying by it (same result, no dense matmul).
    """

    def __init__(self, num_vertices: int = topo.NUM_VERTICES):
        super().__init__()
        self.register_buffer("Dmap", vertex_selection_matrix(topo.MAF_VERTEX_IDS, num_vertices))
        dims = MLP_DIM
        for i in range(len(dims) - 1):
            cin = dims[i] + (dims[0] if i > 0 else 0)
            self.add_module(f"conv{i}", nn.Conv1d(cin, dims[i + 1], 1))
        self.num_layers = len(dims) - 1

    def vertex_ids(self) -> torch.Tensor:
        """(431,) vertex indices selected by ``Dmap`` (one 1.0 per row)."""
        return self.Dmap.argmax(dim=1)

    def forward(self, point_features: torch.Tensor) -> torch.Tensor:
        """(B, 256, N) -> (B, 5*N), flattened channel-major as in the release."""
        # A kernel-1 Conv1d is a linear layer applied per point; run as one (points as
        # rows) it skips the convolution path's per-call cost, which dominates at these
        # sizes. Same weights, same result.
        f = point_features.transpose(1, 2)  # (B, N, 256)
        y = f
        for i in range(self.num_layers):
            conv = getattr(self, f"conv{i}")
            y = F.linear(y if i == 0 else torch.cat([y, f], dim=2), conv.weight[:, :, 0], conv.bias)
            if i < self.num_layers - 1:
                y = F.leaky_relu(y)
        return F.relu(y).transpose(1, 2).flatten(1)


class Regressor(nn.Module):
    """SPIN-style head: [features | pose6d | betas | cam] -> fc1 -> fc2 -> residual updates.

    No nonlinearity between fc1 and fc2 (as in SPIN's HMR head); dropout only in training.
    Each stage owns its SMPL copy, as in the release's state dict.
    """

    def __init__(self, feature_dim: int, body: BodyModelData, width: int = 1024):
        super().__init__()
        init_pose, init_shape, init_cam = default_mean_params()
        self.register_buffer("init_pose", init_pose)
        self.register_buffer("init_shape", init_shape)
        self.register_buffer("init_cam", init_cam)
        self.fc1 = nn.Linear(feature_dim + POSE6D_DIM + topo.NUM_BETAS + 3, width)
        self.drop1 = nn.Dropout(0.5)
        self.fc2 = nn.Linear(width, width)
        self.drop2 = nn.Dropout(0.5)
        self.decpose = nn.Linear(width, POSE6D_DIM)
        self.decshape = nn.Linear(width, topo.NUM_BETAS)
        self.deccam = nn.Linear(width, 3)
        # Small initial updates (as SPIN's xavier gain 0.01) keep an untrained model near
        # the mean body.
        for head in (self.decpose, self.decshape, self.deccam):
            nn.init.xavier_uniform_(head.weight, gain=0.01)
        self.smpl = SMPL(body, batch_size=64)

    def forward(self, features, pose6d, betas, cam):
        """(B, D), (B, 144), (B, 10), (B, 3) -> updated (pose6d, betas, cam)."""
        x = torch.cat([features, pose6d, betas, cam], dim=1)
        x = self.drop2(self.fc2(self.drop1(self.fc1(x))))
        return pose6d + self.decpose(x), betas + self.decshape(x), cam + self.deccam(x)

    def mean_params(self, batch_size: int):
        """Stage-0 starting point (B, 144), (B, 10), (B, 3) from the ``init_*`` buffers."""
        return (self.init_pose.expand(batch_size, -1), self.init_shape.expand(batch_size, -1),
                self.init_cam.expand(batch_size, -1))


def default_mean_params():
    """Mean parameters for a model built from scratch (a checkpoint brings its own).

    Upright body facing the camera (global orient = 180° about x in the OpenCV camera
    frame), rest pose elsewhere, mean shape, body filling ~90% of the crop.
    """
    rot6d_identity = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    rot6d_flip_x = torch.tensor([1.0, 0.0, 0.0, -1.0, 0.0, 0.0])  # diag(1, -1, -1)
    pose = torch.cat([rot6d_flip_x, rot6d_identity.repeat(topo.NUM_JOINTS - 1)]).unsqueeze(0)
    return pose, torch.zeros(1, topo.NUM_BETAS), torch.tensor([[0.9, 0.0, 0.0]])


class IUVHead(nn.Module):
    """Auxiliary dense-correspondence head on the 56x56 map (training only)."""

    def __init__(self, feat_dim: int = 256):
        super().__init__()
        self.predict_u = nn.Conv2d(feat_dim, 25, 3, padding=1)
        self.predict_v = nn.Conv2d(feat_dim, 25, 3, padding=1)
        self.predict_ann_index = nn.Conv2d(feat_dim, 15, 3, padding=1)
        self.predict_uv_index = nn.Conv2d(feat_dim, 25, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict:
        """(B, 256, 56, 56) -> U, V (B, 25, ...), coarse parts (B, 15, ...), parts (B, 25, ...)."""
        return {"predict_u": self.predict_u(x), "predict_v": self.predict_v(x),
                "predict_ann_index": self.predict_ann_index(x),
                "predict_uv_index": self.predict_uv_index(x)}


# --- outputs -----------------------------------------------------------------------
@dataclass
class StageOutput:
    """One stage's estimate. Crop camera and crop-normalized 2D ([-1, 1]).

    rotmat (B, 24, 3, 3); pose_axis_angle (B, 72); pose6d (B, 144); betas (B, 10);
    cam (B, 3) = (s, tx, ty); joints3d (B, 49, 3) without translation;
    joints2d (B, 49, 2); vertices (B, V, 3) for a full-mesh stage, else None;
    sampled_vertices (B, 431, 3): the vertices the next stage samples at.
    """

    rotmat: torch.Tensor
    pose_axis_angle: torch.Tensor
    pose6d: torch.Tensor
    betas: torch.Tensor
    cam: torch.Tensor
    joints3d: torch.Tensor
    joints2d: torch.Tensor
    sampled_vertices: torch.Tensor
    vertices: Optional[torch.Tensor] = None


@dataclass
class PyMAFOutput:
    stages: list = field(default_factory=list)  # StageOutput per stage, last = final
    iuv: Optional[dict] = None
    initial: Optional[StageOutput] = None       # mean-parameter start (with_initial=True)

    @property
    def final(self) -> StageOutput:
        return self.stages[-1]


# --- the network ---------------------------------------------------------------------
class PyMAF(nn.Module):
    """The released network. ``forward(crops (B, 3, 224, 224))`` -> PyMAFOutput."""

    def __init__(self, body: BodyModelData, config: ModelConfig = ModelConfig(), trunk_channels: int = 48):
        """``trunk_channels``: width of a BlazePose trunk's decoder maps (48 for full and heavy,
        32 for lite; ``BlazeTrunk.channels``); unused with the ResNet trunk."""
        super().__init__()
        self.config = config
        self.register_buffer("points_grid", grid_points())
        global_mode = config.feature_mode == "global"
        self._blaze = None        # the attached frozen BlazePose trunk (not a submodule: never saved)
        if config.blaze:
            self.feature_extractor = None
            self.neck = neck_levels(trunk_channels)
            self.deconv_layers = None
            global_dim = 256      # the coarsest level, pooled
        else:
            self.feature_extractor = ResNetTrunk(config.backbone_depth)
            # The global baseline needs the pyramid only to feed the IUV head.
            needs_pyramid = not global_mode or config.with_iuv_head
            self.deconv_layers = deconv_pyramid(self.feature_extractor.out_channels) if needs_pyramid else None
            global_dim = self.feature_extractor.out_channels
        if global_mode:
            self.maf_extractor = nn.ModuleList()
            self.regressor = nn.ModuleList([Regressor(global_dim, body, config.regressor_width)])
        else:
            self.maf_extractor = nn.ModuleList(MAFExtractor(body.num_vertices) for _ in range(NUM_STAGES))
            self.regressor = nn.ModuleList(
                Regressor(self._feature_dim(t), body, config.regressor_width) for t in range(NUM_STAGES))
        self.dp_head = IUVHead(256) if config.with_iuv_head else None
        self._subsets: Optional[list] = None
        self.register_load_state_dict_post_hook(lambda module, keys: module._forget_subsets())

    def _feature_dim(self, t: int) -> int:
        vertex_sampling = self.config.feature_mode == "maf" and t > 0
        return MLP_DIM[-1] * (topo.NUM_MAF_VERTICES if vertex_sampling else GRID_SIZE ** 2)

    def _forget_subsets(self) -> None:
        self._subsets = None  # buffers changed: recompute the vertex subsets

    def _apply(self, fn, *args, **kwargs):
        self._forget_subsets()  # moved to another device or dtype
        if self._blaze is not None:
            self._blaze._apply(fn, *args, **kwargs)   # the trunk goes where the heads go
        return super()._apply(fn, *args, **kwargs)

    def attach_trunk(self, trunk: BlazeTrunk) -> "PyMAF":
        """Give a BlazePose-trunk model its frozen trunk (the user's converted landmark network
        of the configured size); kept out of ``state_dict``."""
        if not self.config.blaze:
            raise ValueError("attach_trunk: this model has a ResNet trunk")
        if trunk.channels != self.neck[0][0].in_channels:
            raise ValueError(f"the trunk's maps have {trunk.channels} channels, the heads expect "
                             f"{self.neck[0][0].in_channels} ({self.config.trunk})")
        object.__setattr__(self, "_blaze", trunk)   # not a submodule: out of state_dict and parameters()
        return self

    def prepare_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """(B, 224, 224, 3) uint8 RGB crops -> this model's input: ImageNet-normalised 224
        (ResNet trunk) or 256 in [0, 1] (BlazePose trunk; the same box)."""
        if self.config.blaze:
            return trunk_input(crops)
        from engine.model.inference import normalize_crops   # (inference imports this module)
        return normalize_crops(crops)

    def trunk_maps(self, crops: torch.Tensor, autocast_dtype: Optional[torch.dtype] = None):
        """What the heads read from an image: the ResNet's (B, C, 7, 7) map, or the BlazePose
        trunk's three decoder maps (frozen: cacheable per sample)."""
        if self.config.blaze:
            if self._blaze is None:
                raise RuntimeError("this model's BlazePose trunk is not attached (attach_trunk)")
            return self._blaze(crops)
        return self._run_cnn(self.feature_extractor, crops, autocast_dtype)

    def stage_regressor(self, t: int) -> Regressor:
        return self.regressor[min(t, len(self.regressor) - 1)]

    def sampled_vertex_ids(self, t: int) -> torch.Tensor:
        """The vertices stage t samples at (the release's Dmap rows; fixed ids without it)."""
        if len(self.maf_extractor):
            return self.maf_extractor[t].vertex_ids()
        return torch.as_tensor(topo.MAF_VERTEX_IDS, device=self.points_grid.device)

    def stage_subsets(self) -> list:
        """Per stage, the vertex subset its SMPL call must pose (the next stage's samples)."""
        if self._subsets is None:
            self._subsets = [self.stage_regressor(t).smpl.subset_for(
                self.sampled_vertex_ids(min(t + 1, NUM_STAGES - 1))) for t in range(NUM_STAGES)]
        return self._subsets

    def pyramid_block(self, t: int) -> nn.Sequential:
        return self.deconv_layers[3 * t: 3 * t + 3]

    def forward(self, crops: Optional[torch.Tensor] = None, *, trunk_maps=None, full_mesh_every_stage: bool = False,
                run_iuv: Optional[bool] = None, autocast_dtype: Optional[torch.dtype] = None,
                with_initial: bool = False) -> PyMAFOutput:
        """crops (B, 3, 224, 224), ImageNet-normalized RGB (BlazePose trunk: (B, 3, 256, 256)
        RGB in [0, 1]) -> PyMAFOutput; or ``trunk_maps`` (``trunk_maps(crops)``, e.g. cached)
        instead of the crops.

        Intermediate stages pose only the sampled vertices (and joint sources) unless
        ``full_mesh_every_stage``; the final stage always gives the full mesh.
        ``run_iuv`` defaults to training mode. ``autocast_dtype`` (bf16/fp16) runs the
        trunk and pyramid in reduced precision; everything after them stays float32.
        ``with_initial`` adds ``out.initial``, the mean-parameter starting estimate.
        """
        if trunk_maps is None:
            trunk_maps = self.trunk_maps(crops, autocast_dtype)
        batch = (trunk_maps[0] if isinstance(trunk_maps, (list, tuple)) else trunk_maps).shape[0]
        if run_iuv is None:
            run_iuv = self.training and self.dp_head is not None
        maps = self._stage_maps(trunk_maps, autocast_dtype, run_iuv)

        pose6d, betas, cam = self.regressor[0].mean_params(batch)
        out = PyMAFOutput()
        subsets = self.stage_subsets()
        if with_initial:
            out.initial = self._stage_output(0, pose6d, betas, cam, subsets[0], full_mesh=full_mesh_every_stage)
        sampled_vertices = None
        for t in range(NUM_STAGES):
            features = self._stage_features(t, maps[t], sampled_vertices, cam)
            pose6d, betas, cam = self.stage_regressor(t)(features, pose6d, betas, cam)
            final = t == NUM_STAGES - 1
            stage = self._stage_output(t, pose6d, betas, cam, subsets[t],
                                       full_mesh=final or full_mesh_every_stage)
            out.stages.append(stage)
            # Feedback: the next stage starts from this estimate, without gradient
            # through it (as in the release).
            pose6d, betas, cam = pose6d.detach(), betas.detach(), cam.detach()
            sampled_vertices = stage.sampled_vertices.detach()
        if run_iuv:
            out.iuv = self.dp_head(maps[-1].float())
        return out

    def _stage_maps(self, trunk_map: torch.Tensor, autocast_dtype, run_iuv: bool) -> list:
        """The feature map each stage reads: pyramid level t (the paper), the finest level
        for every stage (no pyramid), or the trunk map (global; pooled later). The last
        entry is always the finest level when the IUV head needs it."""
        if self.config.blaze:
            levels = [self._run_cnn(self.neck[t], m, autocast_dtype) for t, m in enumerate(trunk_map)]
            if self.config.feature_mode == "global":
                return [levels[0]] * NUM_STAGES + ([levels[-1]] if run_iuv else [])
            return levels if self.config.use_pyramid else [levels[-1]] * NUM_STAGES
        if self.config.feature_mode == "global":
            maps = [trunk_map] * NUM_STAGES
            if run_iuv:
                f = trunk_map
                for t in range(NUM_STAGES):
                    f = self._run_cnn(self.pyramid_block(t), f, autocast_dtype)
                maps.append(f)
            return maps
        levels, f = [], trunk_map
        for t in range(NUM_STAGES):
            f = self._run_cnn(self.pyramid_block(t), f, autocast_dtype)
            levels.append(f)
        return levels if self.config.use_pyramid else [levels[-1]] * NUM_STAGES

    def _stage_features(self, t: int, feature_map: torch.Tensor, sampled_vertices, cam) -> torch.Tensor:
        """(B, D) regressor input features for stage t."""
        if self.config.feature_mode == "global":
            return feature_map.float().mean(dim=(2, 3))  # AvgPool2d(7) of the 7x7 trunk map
        batch = feature_map.shape[0]
        if t == 0 or self.config.feature_mode == "grid":
            points = self.points_grid.transpose(1, 2).expand(batch, -1, -1)
        else:
            points = project_to_crop(sampled_vertices, cam)
        return self.maf_extractor[t](sample_features(feature_map.float(), points))

    @staticmethod
    def _run_cnn(module, x: torch.Tensor, autocast_dtype: Optional[torch.dtype]) -> torch.Tensor:
        if autocast_dtype is None:
            return module(x)
        with torch.autocast(device_type=x.device.type, dtype=autocast_dtype):
            return module(x)

    def _stage_output(self, t: int, pose6d, betas, cam, subset: VertexSubset, full_mesh: bool) -> StageOutput:
        rotmat = rot6d_to_rotmat(pose6d.view(-1, topo.NUM_JOINTS, 6))
        smpl = self.stage_regressor(t).smpl
        if full_mesh:
            body = smpl.pose(rotmat, betas)
            vertices = body.vertices
            sampled = vertices[:, subset.vertex_ids]
        else:
            body = smpl.pose_subset(rotmat, betas, subset)
            vertices, sampled = None, body.vertices
        return StageOutput(
            rotmat=rotmat,
            pose_axis_angle=rotmat_to_axis_angle(rotmat).reshape(-1, 3 * topo.NUM_JOINTS),
            pose6d=pose6d, betas=betas, cam=cam,
            joints3d=body.joints49, joints2d=project_to_crop(body.joints49, cam),
            sampled_vertices=sampled, vertices=vertices,
        )


def build_pymaf(body: BodyModelData, config: ModelConfig = ModelConfig()) -> PyMAF:
    """A PyMAF of ``config``; with a BlazePose trunk, the converted landmark model of its size
    (set-up's, ``engine.landmarks.assets``) frozen and attached (raises
    ``LandmarkModelFileError`` / ``OSError`` when it is missing or damaged)."""
    if not config.blaze:
        return PyMAF(body, config)
    from engine.landmarks.assets import assets_dir
    from engine.landmarks.network import load_landmark_network

    size = trunk_size(config.trunk)
    trunk = BlazeTrunk(load_landmark_network(assets_dir() / f"blazepose_{size}.pt", size)[0])
    return PyMAF(body, config, trunk_channels=trunk.channels).attach_trunk(trunk)
