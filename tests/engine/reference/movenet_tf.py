"""Reference for tests/engine/test_movenet.py: MoveNet MultiPose run by TensorFlow itself.

Runs in its own environment (``.venvs/tf-reference``, requirements/tf-reference.txt: TensorFlow,
no torch), never in the engine's:

    python movenet_tf.py MODEL.json WEIGHTS.bin INPUT.npy OUT.npz

INPUT.npy: (B, H, W, 3) pixel values 0..255 (sent as the graph's int32 input), H and W
multiples of 32. OUT.npz: each head's logits (B, h, w, C) under our names and ``final``
(B, 6, 56), the graph's own decoded output.

The TF.js graph is turned into a TensorFlow GraphDef: the JSON topology is the GraphDef's
JSON form; constants get their values from the weights manifest (float16-quantized values
widened to float32 as TF.js does); TF.js's fused convolutions (_FusedConv2D,
FusedDepthwiseConv2dNative, which are TF.js kernels, not all TensorFlow ones) are written
back as the convolution + BiasAdd + activation they fuse.
"""
import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf import json_format

HEADS = {"center": "center_0/conv2d_4", "box_scale": "box_scale_0/conv2d_5", "box_offset": "box_offset_0/conv2d_6",
         "kpt_regress": "kpt_regress_0/conv2d_8", "kpt_heatmap": "kpt_heatmap_0/conv2d_7",
         "kpt_offset": "kpt_offset_0/conv2d_9"}


def constants(doc: dict, data: bytes) -> dict:
    out, off = {}, 0
    for w in doc["weightsManifest"][0]["weights"]:
        n = int(np.prod(w["shape"])) if w["shape"] else 1
        if w.get("quantization"):
            a = np.frombuffer(data, np.float16, n, off).astype(np.float32)
            off += 2 * n
        else:
            a = np.frombuffer(data, {"float32": np.float32, "int32": np.int32}[w["dtype"]], n, off)
            off += a.nbytes
        out[w["name"]] = a.reshape(w["shape"])
    return out


def unfused(graph):
    out = tf.compat.v1.GraphDef()
    f32 = tf.float32.as_datatype_enum
    for n in graph.node:
        if n.op not in ("_FusedConv2D", "FusedDepthwiseConv2dNative"):
            out.node.add().CopyFrom(n)
            continue
        ops = [s.decode() for s in n.attr["fused_ops"].list.s]
        assert ops[0] == "BiasAdd" and len(ops) <= 2, ops
        conv = out.node.add()
        conv.name, conv.op = n.name + "/conv", "Conv2D" if n.op == "_FusedConv2D" else "DepthwiseConv2dNative"
        conv.input.extend(n.input[:2])
        for k in ("strides", "padding", "dilations", "data_format", "explicit_paddings"):
            if k in n.attr:
                conv.attr[k].CopyFrom(n.attr[k])
        conv.attr["T"].type = f32
        bias = out.node.add()
        bias.name, bias.op = n.name + ("/bias" if len(ops) > 1 else ""), "BiasAdd"
        bias.input.extend([conv.name, n.input[2]])
        bias.attr["T"].type = f32
        if len(ops) > 1:
            act = out.node.add()
            act.name, act.op = n.name, ops[1]
            act.input.append(bias.name)
            act.attr["T"].type = f32
    return out


def main(model_json, weights_bin, input_npy, out_npz):
    doc = json.loads(Path(model_json).read_text())
    topology = {k: v for k, v in doc["modelTopology"].items() if k != "library"}
    graph = json_format.ParseDict(topology, tf.compat.v1.GraphDef(), ignore_unknown_fields=True)
    values = constants(doc, Path(weights_bin).read_bytes())
    for node in graph.node:
        if node.op == "Const" and node.name in values:
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(values[node.name]))
            node.attr["dtype"].type = node.attr["value"].tensor.dtype
    g = tf.Graph()
    with g.as_default():
        tf.import_graph_def(unfused(graph), name="")
    fetch = {k: f"StatefulPartitionedCall/{v}/BiasAdd:0" for k, v in HEADS.items()}
    fetch["final"] = "Identity:0"
    images = np.load(input_npy)
    got = {k: [] for k in fetch}
    with tf.compat.v1.Session(graph=g) as sess:
        for image in images:
            res = sess.run(fetch, {"input:0": image[None].astype(np.int32)})
            for k, v in res.items():
                got[k].append(v[0])
    np.savez(out_npz, **{k: np.stack(v) for k, v in got.items()})


if __name__ == "__main__":
    main(*sys.argv[1:5])
