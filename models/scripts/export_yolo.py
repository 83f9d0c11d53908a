"""Export a randomly initialised YOLOv8n to ONNX -> tests/models/yolov8n-random.onnx.
TEST MODEL ONLY (random weights, not bundled). The YOLOv5-layout test model is derived
from it by the Rust test itself (tests/models.rs appends the layout-changing nodes and
writes the ONNX file), which keeps a second 12 MB file out of the repository.

Source: PyPI package ultralytics 8.4.190 (AGPL-3.0 licence), model definition
ultralytics/cfg/models/v8/yolov8n.yaml (nc=80). No weights are downloaded: the model is built
from the yaml after torch.manual_seed(0), then its BatchNorm statistics are set from four
test photos and its class bias to -2 so that its outputs vary with the input (see calibrate()); ultralytics is kept offline (YOLO_OFFLINE=1,
YOLO_AUTOINSTALL=false, settings sync=False, config dir in a temp folder).
Exporter: ultralytics' ONNX export (torch 2.11.0 TorchScript exporter, opset 13, imgsz 320,
batch 1, no NMS, onnxslim simplify).

yolov8n-random.onnx
  Input  "images"  float32 [1,3,320,320], NCHW, RGB, pixel/255.
  Output "output0" float32 [1,84,2100]: rows 0..3 = cx,cy,w,h in input pixels, rows 4..83 =
         class scores (already sigmoid); 2100 = 40*40 + 20*20 + 10*10 anchors.
"""
import os
import pathlib
import shutil
import sys
import tempfile

import numpy as np

_TMP = tempfile.mkdtemp(prefix="vigil-yolo-")
os.environ["YOLO_OFFLINE"] = "1"
os.environ["YOLO_AUTOINSTALL"] = "false"
os.environ["YOLO_CONFIG_DIR"] = _TMP  # keep ultralytics' settings file out of $HOME

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import REPO, load_rgb, report  # noqa: E402

OUT_DIR = REPO / "tests" / "models"
OUT_V8 = OUT_DIR / "yolov8n-random.onnx"
SIZE = 320
N = (SIZE // 8) ** 2 + (SIZE // 16) ** 2 + (SIZE // 32) ** 2  # 2100
PHOTOS_TO_CHECK = ["astronaut.png", "motorcycle_left.png", "sample1.jpg"]


def preprocess(name):
    x = load_rgb(name, SIZE) / 255.0
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def calibrate(net, torch):
    """Make the random network's output depend on its input.

    Freshly initialised, every BatchNorm has running mean 0 and variance 1, activations
    shrink layer after layer, and the head's output is its bias: near-constant boxes and
    scores of about 1e-4, useless for testing a decoder. Setting the BatchNorm statistics
    from a batch of real photos (one forward pass in training mode) normalises the
    activations, and a class bias of -2 (instead of Ultralytics' prior of about -9) spreads
    the best-class scores over roughly 0.13-0.99 with every class represented. The weights
    stay random: the detections mean nothing, but the decoder sees hundreds of varied,
    overlapping boxes.
    """
    batch = torch.cat([
        torch.from_numpy(preprocess(n)) for n in ["astronaut.png", "motorcycle_left.png", "chelsea.png", "coffee.png"]
    ])
    for mod in net.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None  # cumulative average over the calibration pass
    net.train()
    with torch.no_grad():
        net(batch)
        for seq in net.model[-1].cv3:
            seq[-1].bias.data.fill_(-2.0)
    net.eval()


def export_v8():
    import torch
    from ultralytics import YOLO
    from ultralytics.utils import SETTINGS

    SETTINGS.update({"sync": False})
    torch.manual_seed(0)
    cwd = os.getcwd()
    os.chdir(_TMP)  # the exporter writes <model>.onnx next to the (yaml) model name
    try:
        model = YOLO("yolov8n.yaml", task="detect")
        calibrate(model.model, torch)
        f = model.export(format="onnx", imgsz=SIZE, opset=13, batch=1, dynamic=False,
                         simplify=True, nms=False, device="cpu")
    finally:
        os.chdir(cwd)
    # Drop the export timestamp from ultralytics' metadata so rebuilds are byte-identical.
    import onnx
    m = onnx.load(os.path.join(_TMP, f))
    props = [p for p in m.metadata_props if p.key != "date"]
    del m.metadata_props[:]
    m.metadata_props.extend(props)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(OUT_V8))


def verify():
    import onnx
    import onnxruntime as ort
    s8 = ort.InferenceSession(str(OUT_V8), providers=["CPUExecutionProvider"])
    m = onnx.load(str(OUT_V8))
    onnx.checker.check_model(m)
    print(f"{OUT_V8.name}: opset {m.opset_import[0].version}")
    report(OUT_V8, s8)
    assert s8.get_inputs()[0].shape == [1, 3, SIZE, SIZE]
    assert s8.get_outputs()[0].shape == [1, 84, N]
    for photo in PHOTOS_TO_CHECK:
        y8 = s8.run(None, {"images": preprocess(photo)})[0]
        assert y8.shape == (1, 84, N)
        t = y8[0].T  # [N, 84]
        sc = t[:, 4:]
        print(f"  {photo}: class scores [{sc.min():.3g}, {sc.max():.3g}] (mean {sc.mean():.3g}), "
              f"{int((sc.max(axis=1) > 0.25).sum())} anchors above 0.25; boxes cx "
              f"[{t[:, 0].min():.1f}, {t[:, 0].max():.1f}] w [{t[:, 2].min():.1f}, {t[:, 2].max():.1f}]")


if __name__ == "__main__":
    try:
        if "--verify-only" not in sys.argv:
            export_v8()
        verify()
    finally:
        shutil.rmtree(_TMP, ignore_errors=True)
