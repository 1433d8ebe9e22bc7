"""BlazePose GHUM landmark models (.tflite) -> our own torch weights file.

Conversion runs once at set-up (``engine/landmarks/assets.py``); the engine never reads a
``.tflite`` at run time. The PyPI ``tflite`` package parses the flatbuffer (pure Python);
this module walks the graph and keeps only what the torch network needs:

* the layer list (``steps``): every operator in graph order with its input / output tensor
  ids and options. The landmark models use nine operator types: PAD, CONV_2D,
  DEPTHWISE_CONV_2D, ADD, MAX_POOL_2D, RESIZE_BILINEAR, LOGISTIC, RESHAPE and DEQUANTIZE
  (float16 constants, folded here);
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


def read_tflite(path) -> dict:
    """Parse a landmark model. -> {"steps": [...], "weights": {name: np.ndarray}, "outputs":
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
    inputs = list(graph.InputsAsNumpy())
    if len(inputs) != 1 or tname(inputs[0]) != INPUT_NAME:
        raise ConversionError(f"{Path(path).name}: expected one input '{INPUT_NAME}', got "
                              f"{[tname(i) for i in inputs]}")
    outputs = {tname(i): int(i) for i in graph.OutputsAsNumpy()}
    if set(outputs) != set(OUTPUT_NAMES):
        raise ConversionError(f"{Path(path).name}: outputs {sorted(outputs)} are not the landmark model's "
                              f"{sorted(OUTPUT_NAMES)}")
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
            consts[out] = _tensor_array(model, graph, ins[0])
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
            steps.append({"op": "reshape", "in": [ins[0]], "out": out})
        else:
            raise ConversionError(f"operator {k}: {name} is not a landmark-model operator")
    shape = [int(d) for d in graph.Tensors(inputs[0]).ShapeAsNumpy()][1:]
    return {"steps": steps, "weights": weights, "input": int(inputs[0]), "input_shape": shape,
            "outputs": {OUTPUT_NAMES[n]: i for n, i in outputs.items()}}


def convert_tflite(tflite_path, out_path, *, size: str, source: dict) -> Path:
    """Convert one landmark model to our weights file (written atomically). -> ``out_path``.

    ``source`` is provenance stored in the file (package, version, file name, sha256)."""
    import torch

    from engine.common.atomic import atomic_file

    graph = read_tflite(tflite_path)
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
