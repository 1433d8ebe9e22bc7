"""BlazePose GHUM landmark models (.tflite) -> our own torch weights file.

Conversion runs once at set-up (``engine/landmarks/assets.py``); the engine never reads a
``.tflite`` at run time. The PyPI ``tflite`` package parses the flatbuffer (pure Python);
this module walks the graph and keeps only what the torch network needs:

* the layer list (``steps``): every operator in graph order with its input / output tensor
  ids and options. The landmark models use nine operator types: PAD, CONV_2D,
  DEPTHWISE_CONV_2D, ADD, MAX_POOL_2D, RESIZE_BILINEAR, LOGISTIC, RESHAPE and DEQUANTIZE
  (float16 constants, folded here). The BlazePose person detector (``pose_detection.tflite``,
  ``read_tflite(kind="detector")``) adds DENSIFY (sparse float16 constants, densified here),
  DEPTH_TO_SPACE and CONCATENATION;
* the weights, as float16 exactly as stored in the file (the interpreter dequantizes them to
  float32 at run time, so do we), laid out the torch way: CONV_2D (O, kh, kw, I) -> (O, I, kh,
  kw), DEPTHWISE_CONV_2D (1, kh, kw, C) -> (C, 1, kh, kw).

The weights file (``FORMAT``) is a plain dict readable with ``torch.load(weights_only=True)``::

    {"format": FORMAT, "format_version": 1, "size": "full", "source": {...provenance...},
     "spec": {"input": [256, 256, 3], "outputs": {name: tensor id}, "steps": [...]},
     "state_dict": {"layers.<k>.weight": tensor, "layers.<k>.bias": tensor, ...}}

``engine.landmarks.network.load_landmark_network`` builds the module from ``spec`` and loads
``state_dict`` strictly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

FORMAT = "pymaf-blender/blazepose-ghum-landmark"
FORMAT_VERSION = 1
INPUT_NAME = "input_1"
# tflite output tensor name -> our name (docs: shared/reference/pose-models.md)
OUTPUT_NAMES = {"Identity": "landmarks", "Identity_1": "presence", "Identity_2": "segmentation",
                "Identity_3": "heatmaps", "Identity_4": "world"}
# the BlazePose person detector (pose_detection.tflite, PyPI mediapipe 0.10.21): (1, 2254, 12)
# box + keypoint regressors and (1, 2254, 1) score logits per SSD anchor
DETECTOR_OUTPUT_NAMES = {"Identity": "regressors", "Identity_1": "scores"}
DETECTOR_SIZE = "detector"     # the ``size`` recorded in the detector's weights file
ACTIVATIONS = {0: "none", 1: "relu", 3: "relu6"}   # tflite ActivationFunctionType
PADDINGS = {0: "same", 1: "valid"}                  # tflite Padding


class ConversionError(ValueError):
    """The .tflite file is not a BlazePose landmark model this converter understands."""


def _builtin_names(tflite) -> dict:
    return {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}


def _tensor_array(model, graph, index: int) -> np.ndarray:
    """A constant tensor's data (float16 / float32 / int32), reshaped."""
    import tflite

    t = graph.Tensors(index)
    data = model.Buffers(t.Buffer()).DataAsNumpy()
    if isinstance(data, int) or data is None or len(data) == 0:
        raise ConversionError(f"tensor {t.Name().decode()} has no constant data")
    dtype = {tflite.TensorType.FLOAT16: np.float16, tflite.TensorType.FLOAT32: np.float32,
             tflite.TensorType.INT32: np.int32}.get(t.Type())
    if dtype is None:
        raise ConversionError(f"tensor {t.Name().decode()}: unsupported type {t.Type()}")
    return np.frombuffer(data.tobytes(), dtype=dtype).reshape(t.ShapeAsNumpy())


def _options(op, cls):
    table = op.BuiltinOptions()
    opts = cls()
    opts.Init(table.Bytes, table.Pos)
    return opts


def _sparse_index_vector(table, type_: int) -> np.ndarray:
    import tflite

    cls = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}.get(type_)
    if cls is None or table is None:
        raise ConversionError(f"sparse tensor: unsupported index vector type {type_}")
    v = cls()
    v.Init(table.Bytes, table.Pos)
    return np.asarray(v.ValuesAsNumpy(), np.int64).reshape(-1)


def _densify(model, graph, index: int) -> np.ndarray:
    """A sparse constant (TFLite ``SparsityParameters``, DENSE / CSR dimensions, no blocks) ->
    its dense array. Values are stored in traversal order; each CSR dimension lists, per
    parent position, the coordinates of its stored children (``array_segments`` / ``array_indices``)."""
    t = graph.Tensors(index)
    sp = t.Sparsity()
    name = t.Name().decode()
    if sp is None:
        return _tensor_array(model, graph, index)
    shape = [int(d) for d in t.ShapeAsNumpy()]
    order = [int(d) for d in sp.TraversalOrderAsNumpy()]
    if sp.BlockMapLength() or sorted(order) != list(range(len(shape))) or sp.DimMetadataLength() != len(shape):
        raise ConversionError(f"tensor {name}: block-sparse tensors are not supported")
    coords = np.zeros((1, len(shape)), np.int64)        # one row per position reached so far
    for level, dim in enumerate(order):
        dm = sp.DimMetadata(level)
        if dm.Format() == 0:                             # DENSE
            n = int(dm.DenseSize())
            coords = np.repeat(coords, n, axis=0)
            coords[:, dim] = np.tile(np.arange(n), len(coords) // n)
        else:                                            # SPARSE_CSR
            seg = _sparse_index_vector(dm.ArraySegments(), dm.ArraySegmentsType())
            idx = _sparse_index_vector(dm.ArrayIndices(), dm.ArrayIndicesType())
            if len(seg) != len(coords) + 1 or seg[-1] != len(idx):
                raise ConversionError(f"tensor {name}: inconsistent sparse segments")
            counts = np.diff(seg)
            coords = np.repeat(coords, counts, axis=0)
            coords[:, dim] = idx
    # the values: same dtype rules as dense constants, one per position
    import tflite

    data = model.Buffers(t.Buffer()).DataAsNumpy()
    dtype = {tflite.TensorType.FLOAT16: np.float16, tflite.TensorType.FLOAT32: np.float32}.get(t.Type())
    if dtype is None or isinstance(data, int) or data is None:
        raise ConversionError(f"tensor {name}: unsupported sparse constant")
    values = np.frombuffer(data.tobytes(), dtype=dtype)
    if len(values) != len(coords) or (coords >= np.asarray(shape)).any():
        raise ConversionError(f"tensor {name}: {len(values)} values for {len(coords)} sparse positions")
    dense = np.zeros(shape, dtype)
    dense[tuple(coords.T)] = values
    return dense


def read_tflite(path, kind: str = "landmark") -> dict:
    """Parse a landmark model (``kind`` "landmark") or the person detector ("detector"). -> {"steps": [...], "weights": {name: np.ndarray}, "outputs":
    {our name: tensor id}, "input": tensor id, "input_shape": [H, W, C]}.

    Each step is a plain dict: ``{"op": "conv"|"dwconv"|"pad"|"add"|"maxpool"|"resize"|
    "sigmoid"|"reshape", "in": [ids], "out": id, ...options}``; conv steps name their layer
    index ``layer`` (weights ``layers.<layer>.weight`` / ``.bias``)."""
    import tflite

    buf = Path(path).read_bytes()
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        graph = model.Subgraphs(0)
    except Exception as e:  # noqa: BLE001 - any parse failure means "not a tflite model"
        raise ConversionError(f"{Path(path).name}: not a TFLite model ({type(e).__name__})") from None
    if graph is None:
        raise ConversionError(f"{Path(path).name}: not a TFLite model (no graph)")
    names = _builtin_names(tflite)
    tname = lambda i: graph.Tensors(i).Name().decode()  # noqa: E731
    expected = {"landmark": OUTPUT_NAMES, "detector": DETECTOR_OUTPUT_NAMES}.get(kind)
    if expected is None:
        raise ValueError(f"unknown model kind {kind!r}")
    what = "landmark model" if kind == "landmark" else "pose detector"
    inputs = list(graph.InputsAsNumpy())
    if len(inputs) != 1 or tname(inputs[0]) != INPUT_NAME:
        raise ConversionError(f"{Path(path).name}: expected one input '{INPUT_NAME}', got "
                              f"{[tname(i) for i in inputs]}")
    outputs = {tname(i): int(i) for i in graph.OutputsAsNumpy()}
    if set(outputs) != set(expected):
        raise ConversionError(f"{Path(path).name}: outputs {sorted(outputs)} are not the {what}'s "
                              f"{sorted(expected)}")
    consts = {}      # tensor id -> np array (dequantized constants and plain constant tensors)
    steps, weights = [], {}
    layer = 0

    def const(i):
        if i in consts:
            return consts[i]
        return _tensor_array(model, graph, i)

    for k in range(graph.OperatorsLength()):
        op = graph.Operators(k)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
        ins = [int(i) for i in op.InputsAsNumpy()]
        out = int(op.OutputsAsNumpy()[0])
        if name == "DEQUANTIZE":
            consts[out] = const(ins[0])
        elif name == "DENSIFY":                   # sparse constant weights (the detector): densified here
            consts[out] = _densify(model, graph, ins[0])
        elif name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            depthwise = name == "DEPTHWISE_CONV_2D"
            o = _options(op, tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions)
            w = const(ins[1])
            b = const(ins[2]) if len(ins) > 2 and ins[2] >= 0 else np.zeros(w.shape[-1 if depthwise else 0], w.dtype)
            if depthwise:
                if w.shape[0] != 1 or o.DepthMultiplier() not in (0, 1):
                    raise ConversionError(f"operator {k}: depth multiplier != 1 is not supported")
                w = w.transpose(3, 0, 1, 2)          # (1, kh, kw, C) -> (C, 1, kh, kw)
            else:
                w = w.transpose(0, 3, 1, 2)          # (O, kh, kw, I) -> (O, I, kh, kw)
            if o.DilationHFactor() != 1 or o.DilationWFactor() != 1:
                raise ConversionError(f"operator {k}: dilated convolutions are not supported")
            act = ACTIVATIONS.get(o.FusedActivationFunction())
            if act is None:
                raise ConversionError(f"operator {k}: activation {o.FusedActivationFunction()} not supported")
            weights[f"layers.{layer}.weight"] = np.ascontiguousarray(w).astype(np.float16)
            weights[f"layers.{layer}.bias"] = np.ascontiguousarray(b).astype(np.float16)
            steps.append({"op": "dwconv" if depthwise else "conv", "in": [ins[0]], "out": out, "layer": layer,
                          "stride": [o.StrideH(), o.StrideW()], "padding": PADDINGS[o.Padding()],
                          "act": act})
            layer += 1
        elif name == "PAD":
            pads = const(ins[1]).astype(int)       # (4, 2): N, H, W, C (before, after)
            if pads[0].any():
                raise ConversionError(f"operator {k}: padding of the batch axis")
            # H, W and channel padding (heavy widens residual branches with zero channels)
            steps.append({"op": "pad", "in": [ins[0]], "out": out,
                          "pads": [int(v) for v in pads[[1, 2, 3]].reshape(-1)]})
        elif name == "ADD":
            o = _options(op, tflite.AddOptions)
            steps.append({"op": "add", "in": ins, "out": out, "act": ACTIVATIONS[o.FusedActivationFunction()]})
        elif name == "MAX_POOL_2D":
            o = _options(op, tflite.Pool2DOptions)
            steps.append({"op": "maxpool", "in": [ins[0]], "out": out, "kernel": [o.FilterHeight(), o.FilterWidth()],
                          "stride": [o.StrideH(), o.StrideW()], "padding": PADDINGS[o.Padding()]})
        elif name == "RESIZE_BILINEAR":
            o = _options(op, tflite.ResizeBilinearOptions)
            if o.AlignCorners() or not o.HalfPixelCenters():
                raise ConversionError(f"operator {k}: only half-pixel-centre bilinear resizing is supported")
            size = const(ins[1]).astype(int).tolist()
            steps.append({"op": "resize", "in": [ins[0]], "out": out, "size": size})
        elif name == "LOGISTIC":
            steps.append({"op": "sigmoid", "in": [ins[0]], "out": out})
        elif name == "RESHAPE":
            # the new shape (NHWC order of the source); the torch side reshapes channels-last
            shape = [int(d) for d in graph.Tensors(out).ShapeAsNumpy()]
            steps.append({"op": "reshape", "in": [ins[0]], "out": out, "shape": shape})
        elif name == "DEPTH_TO_SPACE":
            o = _options(op, tflite.DepthToSpaceOptions)
            steps.append({"op": "depth_to_space", "in": [ins[0]], "out": out, "block": int(o.BlockSize())})
        elif name == "CONCATENATION":
            o = _options(op, tflite.ConcatenationOptions)
            ndim = graph.Tensors(out).ShapeLength()
            steps.append({"op": "concat", "in": ins, "out": out, "axis": int(o.Axis()) % ndim, "ndim": int(ndim),
                          "act": ACTIVATIONS[o.FusedActivationFunction()]})
        else:
            raise ConversionError(f"operator {k}: {name} is not a {what} operator")
    shape = [int(d) for d in graph.Tensors(inputs[0]).ShapeAsNumpy()][1:]
    return {"steps": steps, "weights": weights, "input": int(inputs[0]), "input_shape": shape,
            "outputs": {expected[n]: i for n, i in outputs.items()}}


def convert_tflite(tflite_path, out_path, *, size: str, source: dict) -> Path:
    """Convert one landmark model (``size`` lite / full / heavy) or the person detector
    (``size`` ``DETECTOR_SIZE``) to our weights file (written atomically). -> ``out_path``.

    ``source`` is provenance stored in the file (package, version, file name, sha256)."""
    import torch

    from engine.common.atomic import atomic_file

    graph = read_tflite(tflite_path, kind="detector" if size == DETECTOR_SIZE else "landmark")
    doc = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "size": str(size), "source": dict(source),
        "spec": {"input": graph["input"], "input_shape": graph["input_shape"], "outputs": graph["outputs"],
                 "steps": graph["steps"]},
        "state_dict": {k: torch.from_numpy(v.copy()) for k, v in graph["weights"].items()},
    }
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out_path) as f:
        torch.save(doc, f)
    return out_path
