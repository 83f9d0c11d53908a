"""Exports torchvision classifiers (random weights) to ONNX with a reference input and
onnxruntime's output, for the trainer's importer check on architectures beyond the
bundled MobileNetV2 (tests/train_import.rs, `torchvision_exports_import_exactly`, which
runs when VIGIL_TORCHVISION_DIR points at this script's output folder).

    .venv/torch/bin/python tests/data/export_torchvision_classifiers.py OUT

Writes OUT/<name>.onnx, OUT/<name>.input.npy, OUT/<name>.output.npy for resnet18,
efficientnet_b0 and mobilenet_v3_small (opset 13, eval mode, batch 1, 224×224). The files
are large (up to 50 MB) and made on demand, not committed.
"""

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torchvision


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224)
    for name in ["resnet18", "efficientnet_b0", "mobilenet_v3_small"]:
        model = getattr(torchvision.models, name)(weights=None)
        # Freshly initialised BatchNorm statistics (mean 0, variance 1) let activations
        # fade layer by layer until the logits are ~1e-20, which would compare nothing:
        # set them from one training-mode pass over a random batch first.
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None
        model.train()
        with torch.no_grad():
            model(torch.randn(8, 3, 224, 224))
        model.eval()
        path = out / f"{name}.onnx"
        torch.onnx.export(model, x, str(path), opset_version=13, input_names=["input"], output_names=["logits"],
                          dynamo=False)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        y = sess.run(None, {"input": x.numpy()})[0]
        np.save(out / f"{name}.input.npy", x.numpy())
        np.save(out / f"{name}.output.npy", y.astype(np.float32))
        ops = sorted({n.op_type for n in __import__("onnx").load(str(path)).graph.node})
        print(f"{name}: {path.stat().st_size / 1e6:.1f} MB, logits range [{y.min():.3g}, {y.max():.3g}], ops {ops}")


if __name__ == "__main__":
    main()
