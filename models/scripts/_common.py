"""Small helpers shared by the conversion scripts (no third-party imports at module level)."""
import hashlib
import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
PHOTOS = REPO / "tests" / "photos"
SOURCES = pathlib.Path(os.environ.get("VIGIL_SOURCES_DIR", REPO / ".venv" / "sources"))


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_rgb(name, size):
    """Load tests/photos/<name> as an RGB float32 HxWx3 array in [0, 255], resized
    (stretched, bilinear) to size x size. Uses Pillow if present, else TensorFlow."""
    import numpy as np
    path = PHOTOS / name
    try:
        from PIL import Image
        im = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
        return np.asarray(im, dtype=np.float32)
    except ImportError:
        import tensorflow as tf
        img = tf.io.decode_image(tf.io.read_file(str(path)), channels=3, expand_animations=False)
        img = tf.image.resize(tf.cast(img, tf.float32), (size, size), method="bilinear")
        return img.numpy().astype(np.float32)


def report(path, sess):
    """Print the input/output names and shapes of an onnxruntime session and the sha256."""
    for i in sess.get_inputs():
        print(f"  input  {i.name:10s} {i.shape} {i.type}")
    for o in sess.get_outputs():
        print(f"  output {o.name:10s} {o.shape} {o.type}")
    print(f"  size   {os.path.getsize(path)} bytes")
    print(f"  sha256 {sha256(path)}  {os.path.relpath(path, REPO)}")


def fold_constants(model, graph_inputs):
    """Replace every node whose inputs do not depend on the graph inputs by initializers
    holding its (onnxruntime-computed) outputs. tf2onnx leaves a few such nodes behind
    (e.g. SparseToDense -> Expand/ScatterND/Cast feeding Reshape shapes)."""
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    g = model.graph
    dyn = set(graph_inputs)
    for n in g.node:
        if any(i in dyn for i in n.input):
            dyn.update(n.output)
    foldable = [n for n in g.node if not any(i in dyn for i in n.input)]
    if not foldable:
        return model, 0
    folded_out = {o for n in foldable for o in n.output}
    keep = [n for n in g.node if n not in foldable]
    needed = [o for o in folded_out
              if any(o in n.input for n in keep) or o in {x.name for x in g.output}]
    sub = helper.make_model(
        helper.make_graph(foldable, "fold", [], [onnx.ValueInfoProto(name=o) for o in needed],
                          initializer=list(g.initializer)),
        opset_imports=model.opset_import)
    values = dict(zip(needed, ReferenceEvaluator(sub).run(needed, {})))
    del g.node[:]
    g.node.extend(keep)
    for name, v in values.items():
        g.initializer.append(numpy_helper.from_array(v, name))
    # drop initializers nothing uses any more
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    live = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    return model, len(foldable)


def infer_static_shapes(model):
    """Drop tf2onnx's symbolic ("unk__N") value_info and output shapes, rerun ONNX shape
    inference, and check every graph output ends up with a fully static shape."""
    import onnx
    del model.graph.value_info[:]
    for o in model.graph.output:
        o.type.tensor_type.ClearField("shape")
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    for o in model.graph.output:
        dims = [d.dim_value if d.HasField("dim_value") else None for d in o.type.tensor_type.shape.dim]
        assert dims and all(d for d in dims), f"output {o.name} has no static shape: {dims}"
    return model


def canonical_initializer_names(model):
    """Rename initializers to const_<k> in order of first use and store them in that order.
    tf2onnx numbers the constants it creates in a run-dependent order, which otherwise makes
    the file bytes (and sha256) differ from run to run."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    order = []
    for n in g.node:
        for i in n.input:
            if i in inits and i not in order:
                order.append(i)
    order += [name for name in inits if name not in order]
    new = {old: f"const_{k}" for k, old in enumerate(order)}
    for n in g.node:
        for k, i in enumerate(n.input):
            if i in new:
                n.input[k] = new[i]
    tensors = []
    for old in order:
        t = inits[old]
        t.name = new[old]
        tensors.append(t)
    del g.initializer[:]
    g.initializer.extend(tensors)
    return model


def postprocess_tf2onnx(path, graph_inputs):
    """Constant-fold leftovers, make names deterministic and output shapes static, in place."""
    import onnx
    model = onnx.load(str(path))
    model, n = fold_constants(model, graph_inputs)
    model = canonical_initializer_names(model)
    model = infer_static_shapes(model)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    print(f"  post-processed {path.name}: folded {n} constant nodes, static output shapes")
