"""Training throughput: vigil (tch, the ONNX graph imported) against PyTorch, same model.

The model is MobileNetV2 as the bundled ONNX file has it: torchvision's mobilenet_v2 with
every BatchNorm folded into the convolution before it (as torch.onnx.export folds them)
and no dropout before the classifier, with a fresh head for --classes classes. Both sides
run the same step on the same device in this one run: a batch of random 224×224 images,
forward, cross-entropy against random labels, backward, Adam (lr 1e-3), fp32, no data
loading and no augmentation. Prints images/s for each and the ratio vigil / PyTorch.

    python bench/compare_torch_train.py --vigil target/release/vigil --device cpu --threads 2
    python bench/compare_torch_train.py --vigil ./vigil --device cuda --batch 64

Needs torch and torchvision; vigil must be built with `--features train`.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]


def fold_batchnorms(module: torch.nn.Module) -> None:
    """Replace each Conv2d → BatchNorm2d pair by the conv with the BN folded in."""
    for child in module.children():
        fold_batchnorms(child)
    if isinstance(module, torch.nn.Sequential):
        items = list(module)
        for i in range(len(items) - 1):
            conv, bn = items[i], items[i + 1]
            if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
                module[i] = torch.nn.utils.fusion.fuse_conv_bn_eval(conv.eval(), bn.eval())
                module[i + 1] = torch.nn.Identity()


def torch_model(classes: int) -> torch.nn.Module:
    m = torchvision.models.mobilenet_v2(num_classes=classes)
    fold_batchnorms(m)
    m.classifier[0] = torch.nn.Identity()  # the exported graph has no dropout
    return m


def bench_torch(device, batch, classes, steps, warmup):
    torch.manual_seed(0)
    model = torch_model(classes).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = torch.randint(classes, (batch,), device=device)

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"images_per_second": batch * steps / seconds, "seconds": seconds, "final_loss": float(loss.detach())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vigil", default=str(ROOT / "target/release/vigil"))
    ap.add_argument("--onnx", default=str(ROOT / "models/mobilenet-v2.onnx"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for both (0: leave the default)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cmd = [args.vigil, "bench-train", "--onnx", args.onnx, "--device", args.device, "--batch", str(args.batch),
           "--classes", str(args.classes), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    ours = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    # The same step with libtorch's per-parameter Adam, to show what the flat optimiser saves.
    ours_lt = json.loads(subprocess.run(cmd + ["--libtorch-adam"], check=True, capture_output=True, text=True).stdout)
    ref = bench_torch(device, args.batch, args.classes, args.steps, args.warmup)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"MobileNetV2 training, batch {args.batch}, 224x224, {args.steps} steps after {args.warmup} warm-up, {name}")
    print(f"  vigil (tch)                  {ours['images_per_second']:8.1f} images/s   loss {ours['final_loss']:.3f}")
    print(f"  vigil, libtorch's Adam       {ours_lt['images_per_second']:8.1f} images/s   loss {ours_lt['final_loss']:.3f}")
    print(f"  PyTorch                      {ref['images_per_second']:8.1f} images/s   loss {ref['final_loss']:.3f}  (torch {torch.__version__})")
    print(f"  ratio vigil / PyTorch: {ours['images_per_second'] / ref['images_per_second']:.2f}"
          f"  (with libtorch's Adam: {ours_lt['images_per_second'] / ref['images_per_second']:.2f})")
    print(json.dumps({"device": name, "vigil": ours, "vigil_libtorch_adam": ours_lt, "pytorch": ref,
                      "ratio": ours["images_per_second"] / ref["images_per_second"]}))


if __name__ == "__main__":
    sys.exit(main())
