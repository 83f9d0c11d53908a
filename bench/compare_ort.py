"""vigil (tract) against onnxruntime on the same model, input and thread count.

Runs `vigil bench --json --save-input` for each manifest, which times tract and writes the
exact input tensor it used; then times onnxruntime (one intra-op thread, one inter-op
thread, all graph optimisations) on that same tensor in this same run, and prints the
ratio vigil / onnxruntime of the median and mean inference latency.

    .venv/torch/bin/python bench/compare_ort.py [--iterations 50] [manifest.toml ...]

Defaults to the three bundled models. Build vigil first (`cargo build --release`); set
VIGIL to another binary if needed. This is a benchmark: numbers vary with the machine
and its load, so only the ratio measured within one run means much.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ["models/mobilenet-v2.toml", "models/nanodet-m.toml", "models/blazeface.toml"]
DEFAULT_IMAGES = {
    "mobilenet-v2": "tests/photos/chelsea.png",
    "nanodet-m": "tests/photos/motorcycle_left.png",
    "blazeface": "tests/photos/astronaut.png",
}


def percentile(samples, p):
    s = sorted(samples)
    return s[round((len(s) - 1) * p)]


def time_ort(onnx_path, x, iterations, warmup):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"p50": percentile(times, 0.5), "p90": percentile(times, 0.9), "mean": statistics.mean(times)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("manifests", nargs="*", default=DEFAULT_MODELS)
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    vigil = os.environ.get("VIGIL", str(ROOT / "target/release/vigil"))
    print(f"onnxruntime {ort.__version__}, 1 thread each, {args.iterations} runs after {args.warmup} warm-up")
    print(f"{'model':<14} {'vigil p50':>10} {'ort p50':>9} {'ratio':>6}   {'vigil mean':>10} {'ort mean':>9} {'ratio':>6}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for manifest in args.manifests:
            mpath = ROOT / manifest
            m = tomllib.loads(mpath.read_text())
            npy = Path(tmp) / f"{m['name']}.npy"
            cmd = [vigil, "bench", "--model", str(mpath), "--json", "--save-input", str(npy),
                   "--iterations", str(args.iterations), "--warmup", str(args.warmup)]
            image = DEFAULT_IMAGES.get(m["name"])
            if image:
                cmd += ["--image", str(ROOT / image)]
            ours = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            ref = time_ort(mpath.parent / m["model"], np.load(npy), args.iterations, args.warmup)
            v = ours["inference_ms"]
            row = {
                "model": m["name"],
                "vigil_p50_ms": v["p50"], "ort_p50_ms": ref["p50"], "ratio_p50": v["p50"] / ref["p50"],
                "vigil_mean_ms": v["mean"], "ort_mean_ms": ref["mean"], "ratio_mean": v["mean"] / ref["mean"],
            }
            rows.append(row)
            print(f"{row['model']:<14} {v['p50']:>10.2f} {ref['p50']:>9.2f} {row['ratio_p50']:>5.2f}x"
                  f"   {v['mean']:>10.2f} {ref['mean']:>9.2f} {row['ratio_mean']:>5.2f}x")
    print(json.dumps(rows))


if __name__ == "__main__":
    sys.exit(main())
