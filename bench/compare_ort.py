"""vigil against onnxruntime on the same model, input and thread count.

Model alone (the default): runs `vigil bench --json --save-input` for each manifest, which
times vigil's engine (tract, or `--engine onnxruntime`) and writes the exact input tensor it
used; then times onnxruntime from Python (one intra-op thread, one inter-op thread, all graph
optimisations) on that same tensor in this same run, and prints the ratio vigil / onnxruntime
of the median and mean inference latency.

Camera pipeline (`--pipeline`): for each manifest, in one run,
  - vigil's whole camera path (`vigil bench --pipeline`: JPEG decode, model, tracker, MQTT to
    the embedded broker) on all cores, frames/s, against onnxruntime's bare inference
    frames/s (back-to-back runs on the same input) with one thread and with all cores;
  - the pipeline's p99 frame latency with one frame in flight on one thread, against
    vigil's own model p50 on one thread;
  - with `--gating-seconds S` > 0, CPU seconds per minute of a 5 fps camera on a still scene
    with motion gating, against the same without;
the frames/s figures each the median of `--repeats` runs (3), interleaved with onnxruntime's;
each for every engine of `--engines` (default tract; `tract,onnxruntime` needs a vigil built
with `--features onnxruntime` and ORT_DYLIB_PATH, see scripts/setup-onnxruntime.sh). The
onnxruntime engine is also timed with one frame in flight on all cores (one session whose
operators use every core), beside the default of one single-threaded session per core.

    .venv/ort/bin/python bench/compare_ort.py [--iterations 50] [--engine E] [manifest.toml ...]
    .venv/ort/bin/python bench/compare_ort.py --pipeline [--frames 200] [--engines tract,onnxruntime] [manifest.toml ...]

(`scripts/setup-bench.sh` makes that venv.) Defaults to the three bundled models (two with
--pipeline). Build vigil first (`cargo build --release [--features onnxruntime]`); set VIGIL
to another binary if needed. This is a benchmark: numbers vary with the machine and its load, so only the
ratio measured within one run means much.
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


def warm_session(onnx_path, x, threads, warmup):
    """An onnxruntime CPU session (`threads` intra-op, one inter-op, every graph
    optimisation) and its feed, after `warmup` untimed runs."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(warmup):
        sess.run(None, feed)
    return sess, feed


def time_ort(onnx_path, x, iterations, warmup):
    sess, feed = warm_session(onnx_path, x, 1, warmup)
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"p50": percentile(times, 0.5), "p90": percentile(times, 0.9), "mean": statistics.mean(times)}


def ort_fps(onnx_path, x, threads, iterations, warmup):
    """onnxruntime's bare inference, back to back on one input: frames per second."""
    sess, feed = warm_session(onnx_path, x, threads, warmup)
    t0 = time.perf_counter()
    for _ in range(iterations):
        sess.run(None, feed)
    return iterations / (time.perf_counter() - t0)


def vigil_json(cmd):
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def bench_case(manifest, vigil, tmp):
    """A manifest's model name, its ONNX file, the .npy path for its input tensor, and the
    start of its `vigil bench --json` command (with the model's photo, if it has one)."""
    mpath = ROOT / manifest
    m = tomllib.loads(mpath.read_text())
    image = DEFAULT_IMAGES.get(m["name"])
    base = [vigil, "bench", "--model", str(mpath), "--json"] + (["--image", str(ROOT / image)] if image else [])
    return m["name"], mpath.parent / m["model"], Path(tmp) / f"{m['name']}.npy", base


def pipeline(args, vigil):
    cores = os.cpu_count()
    print(f"onnxruntime {ort.__version__}, {cores} cores, {args.frames} frames per figure, "
          f"throughput figures the median of {args.repeats} interleaved runs")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for manifest in args.manifests:
            name, onnx, npy, base = bench_case(manifest, vigil, tmp)
            vigil_json(base + ["--save-input", str(npy), "--iterations", "1", "--warmup", "0"])
            x = np.load(npy)
            frames = ["--frames", str(args.frames)]
            # Throughput, interleaved: a neighbour's burst on a shared machine lands on one
            # run of each kind rather than on all runs of one kind.
            runs = {"ort1": [], "ortn": []}
            for _ in range(args.repeats):
                runs["ort1"].append(ort_fps(onnx, x, 1, args.frames, args.warmup))
                runs["ortn"].append(ort_fps(onnx, x, cores, args.frames, args.warmup))
                for engine in args.engines:
                    e = base + ["--engine", engine, "--pipeline", "--threads", "auto"] + frames
                    runs.setdefault((engine, "every"), []).append(vigil_json(e))
                    if engine == "onnxruntime":
                        runs.setdefault((engine, "wide"), []).append(vigil_json(e + ["--in-flight", "1"]))
            ort1 = statistics.median(runs["ort1"])
            ortn = statistics.median(runs["ortn"])
            print(f"\n{name}: onnxruntime bare, 1 thread: {ort1:.2f} frames/s; {cores} threads: {ortn:.2f} frames/s")
            for engine in args.engines:
                row = pipeline_row(args, base + ["--engine", engine], engine, runs, ort1, ortn, cores)
                row["model"] = name
                rows.append(row)
    print(json.dumps(rows))


def fps(runs):
    """The median frames/s of several `vigil bench --pipeline` runs, and the runs' figures."""
    return statistics.median(r["frames_per_s"] for r in runs), ", ".join(f"{r['frames_per_s']:.1f}" for r in runs)


def pipeline_row(args, base, engine, runs, ort1, ortn, cores):
    """One engine's figures for one model, against onnxruntime's bare frames/s."""
    frames = ["--frames", str(args.frames)]
    model = vigil_json(base + ["--iterations", str(args.frames // 2)])
    one = vigil_json(base + ["--pipeline", "--threads", "1"] + frames)
    every = runs[(engine, "every")][-1]
    every_fps, every_runs = fps(runs[(engine, "every")])
    row = {
        "engine": engine,
        "vigil_fps_all_cores": every_fps, "threads": every["threads"],
        "in_flight": every["in_flight"],
        "ort_fps_1_thread": ort1, "ort_fps_all_cores": ortn,
        "ratio_vs_ort_1_thread": every_fps / ort1,
        "ratio_vs_ort_all_cores": every_fps / ortn,
        "vigil_model_p50_ms": model["inference_ms"]["p50"],
        "pipeline_p99_ms_1_in_flight": one["latency_ms"]["p99"],
        "p99_over_model_p50": one["latency_ms"]["p99"] / model["inference_ms"]["p50"],
        "preprocess_share": model["preprocess_ms"]["p50"] / model["inference_ms"]["p50"],
        "decode_share": model["decode_ms"]["p50"] / model["inference_ms"]["p50"],
        "rss_mb": every["rss_mb"],
        "rss_mb_1_thread": one["rss_mb"],
    }
    print(f"  engine {engine}:")
    print(f"    vigil pipeline, {every['threads']} threads ({every['in_flight']} in flight): "
          f"{every_fps:.2f} frames/s ({every_runs}) -> ratio {row['ratio_vs_ort_1_thread']:.2f} to onnxruntime "
          f"on 1 thread, {row['ratio_vs_ort_all_cores']:.2f} on {cores}")
    if (engine, "wide") in runs:
        wide_fps, wide_runs = fps(runs[(engine, "wide")])
        row["vigil_fps_all_cores_1_in_flight"] = wide_fps
        print(f"    vigil pipeline, {every['threads']} threads (1 in flight): {wide_fps:.2f} frames/s ({wide_runs}) "
              f"-> ratio {wide_fps / ortn:.2f} to onnxruntime on {cores}")
    print(f"    p99 latency, 1 in flight: {one['latency_ms']['p99']:.2f} ms / model p50 "
          f"{model['inference_ms']['p50']:.2f} ms = {row['p99_over_model_p50']:.2f}")
    print(f"    preprocess {100 * row['preprocess_share']:.1f}% and decode {100 * row['decode_share']:.1f}% "
          f"of the model's time")
    print(f"    memory: {every['rss_mb']:.1f} MB all cores, {one['rss_mb']:.1f} MB on 1 thread")
    if args.gating_seconds > 0:
        paced = base + ["--pipeline", "--threads", "1", "--fps", "5", "--seconds", str(args.gating_seconds)]
        gated = vigil_json(paced + ["--motion"])
        plain = vigil_json(paced)
        row["cpu_s_per_min_gated"] = gated["cpu_s_per_minute"]
        row["cpu_s_per_min_ungated"] = plain["cpu_s_per_minute"]
        row["gated_over_ungated"] = gated["cpu_s_per_minute"] / plain["cpu_s_per_minute"]
        print(f"    5 fps still scene, CPU s/min: gated {row['cpu_s_per_min_gated']:.2f}, "
              f"ungated {row['cpu_s_per_min_ungated']:.2f} -> ratio {row['gated_over_ungated']:.3f}")
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("manifests", nargs="*", default=None)
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--pipeline", action="store_true", help="compare the camera pipeline (see above)")
    ap.add_argument("--frames", type=int, default=200, help="frames per pipeline figure")
    ap.add_argument("--gating-seconds", type=float, default=60.0,
                    help="seconds of each motion-gating run (0: skip)")
    ap.add_argument("--engine", default="tract", help="model alone: vigil's engine, tract or onnxruntime")
    ap.add_argument("--engines", default="tract", help="--pipeline: vigil's engines, comma-separated")
    ap.add_argument("--repeats", type=int, default=3, help="--pipeline: runs of each throughput figure")
    args = ap.parse_args()
    vigil = os.environ.get("VIGIL", str(ROOT / "target/release/vigil"))
    if args.pipeline:
        args.engines = args.engines.split(",")
        args.manifests = args.manifests or DEFAULT_MODELS[:2]
        return pipeline(args, vigil)
    args.manifests = args.manifests or DEFAULT_MODELS
    print(f"vigil on {args.engine} against onnxruntime {ort.__version__}, 1 thread each, "
          f"{args.iterations} runs after {args.warmup} warm-up")
    print(f"{'model':<14} {'vigil p50':>10} {'ort p50':>9} {'ratio':>6}   {'vigil mean':>10} {'ort mean':>9} {'ratio':>6}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for manifest in args.manifests:
            name, onnx, npy, base = bench_case(manifest, vigil, tmp)
            ours = vigil_json(base + ["--engine", args.engine, "--save-input", str(npy),
                                      "--iterations", str(args.iterations), "--warmup", str(args.warmup)])
            ref = time_ort(onnx, np.load(npy), args.iterations, args.warmup)
            v = ours["inference_ms"]
            row = {
                "model": name,
                "vigil_p50_ms": v["p50"], "ort_p50_ms": ref["p50"], "ratio_p50": v["p50"] / ref["p50"],
                "vigil_mean_ms": v["mean"], "ort_mean_ms": ref["mean"], "ratio_mean": v["mean"] / ref["mean"],
            }
            rows.append(row)
            print(f"{row['model']:<14} {v['p50']:>10.2f} {ref['p50']:>9.2f} {row['ratio_p50']:>5.2f}x"
                  f"   {v['mean']:>10.2f} {ref['mean']:>9.2f} {row['ratio_mean']:>5.2f}x")
    print(json.dumps(rows))


if __name__ == "__main__":
    sys.exit(main())
