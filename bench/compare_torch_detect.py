"""Detector training throughput: vigil (tch, the ONNX graph imported) against PyTorch, same graph.

The model is the bundled NanoDet-m as its ONNX file has it. PyTorch gets it through onnx2torch
(a torch.fx module with the file's weights), after the same two changes vigil's trainer makes
to the graph: the class maps' Sigmoids are taken out (training works on logits) and the head
Reshapes keep the batch ([0, n, -1] instead of [1, n, -1]). Both sides run the same step on the
same device in this one run: a batch of random images at --size, forward, the mean square of
every output summed (a stand-in loss that both sides compute alike), backward, Adam (lr 1e-3),
fp32, no data loading, no augmentation. vigil also reports its whole training step (ATSS
targets and NanoDet's loss instead of the stand-in), which PyTorch has no twin of here.

    python bench/compare_torch_detect.py --vigil target/release/vigil --device cpu --threads 2
    python bench/compare_torch_detect.py --vigil ./vigil --device cuda --batch 32 --size 320

Needs torch, onnx and onnx2torch; vigil must be built with `--features train`.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnx2torch
import torch
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]


def training_graph(path: Path) -> onnx.ModelProto:
    """The ONNX graph with the changes vigil's trainer makes: no Sigmoid, batch-keeping Reshapes."""
    m = onnx.load(str(path))
    inits = {i.name: i for i in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    # As GraphModule::detection_logits: a Sigmoid on a Split's first output (the class part of
    # a head) is skipped, and the head's Reshapes to [1, n, -1] keep the batch.
    for n in m.graph.node:
        if n.op_type == "Sigmoid" and getattr(producer.get(n.input[0]), "op_type", None) == "Split":
            n.op_type = "Identity"
    added = {}
    for n in m.graph.node:
        if n.op_type == "Reshape" and n.input[1] in inits:
            shape = numpy_helper.to_array(inits[n.input[1]]).copy()
            if len(shape) == 3 and shape[0] == 1 and shape[2] == -1:
                name = n.input[1] + "_batch"
                if name not in added:
                    shape[0] = 0
                    added[name] = numpy_helper.from_array(shape.astype(np.int64), name)
                    m.graph.initializer.append(added[name])
                n.input[1] = name
    return m


def bench_torch(onnx_path, device, batch, size, steps, warmup):
    torch.manual_seed(0)
    model = onnx2torch.convert(training_graph(onnx_path)).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, size, size, device=device)

    def step():
        opt.zero_grad()
        outputs = model(x)
        loss = sum(o.square().mean() for o in outputs)
        loss.backward()
        opt.step()
        return loss, [tuple(o.shape) for o in outputs]

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss, shapes = step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"images_per_second": batch * steps / seconds, "seconds": seconds, "final_loss": float(loss.detach()),
            "output_shapes": shapes}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vigil", default=str(ROOT / "target/release/vigil"))
    ap.add_argument("--onnx", default=str(ROOT / "models/nanodet-m.onnx"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for both (0: leave the default)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    # 80 classes: the class rows are fresh on vigil's side, the shapes the same as the file's.
    cmd = [args.vigil, "bench-train", "--onnx", args.onnx, "--device", args.device, "--batch", str(args.batch),
           "--size", str(args.size), "--classes", "80", "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    ours = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    ref = bench_torch(Path(args.onnx), device, args.batch, args.size, args.steps, args.warmup)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"NanoDet-m training, batch {args.batch}, {args.size}x{args.size}, {args.steps} steps after "
          f"{args.warmup} warm-up, {name}")
    print(f"  vigil (tch), stand-in loss   {ours['images_per_second']:8.1f} images/s   loss {ours['final_loss']:.3f}")
    print(f"  vigil, its whole step        {ours['full_step_images_per_second']:8.1f} images/s   (ATSS + GFL loss)")
    print(f"  PyTorch (onnx2torch)         {ref['images_per_second']:8.1f} images/s   loss {ref['final_loss']:.3f}"
          f"  (torch {torch.__version__})")
    print(f"  ratio vigil / PyTorch: {ours['images_per_second'] / ref['images_per_second']:.2f}")
    print(json.dumps({"device": name, "vigil": ours, "pytorch": ref,
                      "ratio": ours["images_per_second"] / ref["images_per_second"]}))


if __name__ == "__main__":
    sys.exit(main())
