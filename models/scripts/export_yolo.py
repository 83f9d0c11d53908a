"""Export randomly initialised YOLO models to ONNX -> tests/models/<name>-random.onnx.
TEST MODELS ONLY (random weights, not bundled): their detections mean nothing, their output
layouts are what vigil's decoders are tested on.

    export_yolo.py [yolov8n] [yolo26n] [yolov10n] [--verify-only]   (default: all three)

- yolov8n: the v8 layout, one output [1, 84, 2100] (committed). The YOLOv5-layout test model
  is derived from it by the Rust test itself (tests/models.rs appends the layout-changing
  nodes and writes the ONNX file), which keeps a second 12 MB file out of the repository.
- yolo26n: YOLO26, ultralytics' current default, an end-to-end ("NMS-free") export: one
  output [1, 300, 6] = x1, y1, x2, y2 in input pixels, score, class (committed).
- yolov10n: YOLOv10, the same end-to-end output from another head (not committed: rebuilt
  here, and its test skips with a message when the file is absent).

Source: PyPI package ultralytics 8.4.190 (AGPL-3.0 licence), model definitions
ultralytics/cfg/models/{v8/yolov8n, 26/yolo26n, v10/yolov10n}.yaml (nc=80). No weights are
downloaded: each model is built from its yaml after torch.manual_seed(0), then its BatchNorm
statistics are set from four test photos and its class bias to -2 so that its outputs vary
with the input (see calibrate()); ultralytics is kept offline (YOLO_OFFLINE=1,
YOLO_AUTOINSTALL=false, settings sync=False, config dir in a temp folder).
Exporter: ultralytics' ONNX export (torch 2.11.0 TorchScript exporter, opset 13, imgsz 320,
batch 1, no NMS, onnxslim simplify).

Input of each: "images" float32 [1,3,320,320], NCHW, RGB, pixel/255.
yolov8n-random.onnx   "output0" float32 [1,84,2100]: rows 0..3 = cx,cy,w,h in input pixels,
                      rows 4..83 = class scores (already sigmoid); 2100 = 40*40 + 20*20 +
                      10*10 anchors.
yolo26n-random.onnx,  "output0" float32 [1,300,6]: the 300 best (anchor, class) pairs, best
yolov10n-random.onnx  first: x1, y1, x2, y2 in input pixels, score (sigmoid), class index.
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
SIZE = 320
N = (SIZE // 8) ** 2 + (SIZE // 16) ** 2 + (SIZE // 32) ** 2  # 2100
MODELS = ["yolov8n", "yolo26n", "yolov10n", "yolov8n-pose", "yolo26n-pose"]
# Rows per detection or anchor: 4 box values, then 80 class scores (detect) or 1 (pose,
# "person") and 17 keypoints of x, y, visibility.
POSE_VALUES = 1 + 17 * 3


def out_path(name):
    return OUT_DIR / f"{name}-random.onnx"
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
        head = net.model[-1]
        # End-to-end heads (YOLO26, YOLOv10) export their one-to-one branch instead.
        for branch in [head.cv3, getattr(head, "one2one_cv3", None)]:
            for seq in branch or []:
                seq[-1].bias.data.fill_(-2.0)
    net.eval()


def one_class_yaml(name):
    """ultralytics' yolo26-pose.yaml says nc: 80 (a dataset's yaml sets 1); a pose model
    finds people, so write the definition with nc: 1 (and its scale) where the exporter,
    run in _TMP, finds it before the package's own."""
    import yaml
    from ultralytics.utils import ROOT
    cfg = yaml.safe_load((ROOT / "cfg" / "models" / "26" / "yolo26-pose.yaml").read_text())
    cfg["nc"] = 1
    cfg["scale"] = "n"
    pathlib.Path(_TMP, f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def export(name):
    import torch
    from ultralytics import YOLO
    from ultralytics.utils import SETTINGS

    SETTINGS.update({"sync": False})
    torch.manual_seed(0)
    cwd = os.getcwd()
    os.chdir(_TMP)  # the exporter writes <model>.onnx next to the (yaml) model name
    try:
        if name == "yolo26n-pose":
            one_class_yaml(name)
        model = YOLO(f"{name}.yaml", task="pose" if name.endswith("-pose") else "detect")
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
    onnx.save(m, str(out_path(name)))


def verify(name):
    import onnx
    import onnxruntime as ort
    path = out_path(name)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    print(f"{path.name}: opset {m.opset_import[0].version}")
    report(path, sess)
    assert sess.get_inputs()[0].shape == [1, 3, SIZE, SIZE]
    end2end = not name.startswith("yolov8n")
    pose = name.endswith("-pose")
    rows = 4 + (POSE_VALUES if pose else 80)
    want = [1, 300, 6 + (rows - 5 if pose else 0)] if end2end else [1, rows, N]
    assert sess.get_outputs()[0].shape == want, (sess.get_outputs()[0].shape, want)
    for photo in PHOTOS_TO_CHECK:
        y = sess.run(None, {"images": preprocess(photo)})[0]
        if end2end:
            d = y[0]  # [300, 6]
            assert (np.diff(d[:, 4]) <= 0).all(), "rows are best first"
            print(f"  {photo}: scores [{d[:, 4].min():.3g}, {d[:, 4].max():.3g}], "
                  f"{int((d[:, 4] > 0.25).sum())} rows above 0.25, {len(set(d[:, 5].tolist()))} classes; "
                  f"x1 [{d[:, 0].min():.1f}, {d[:, 0].max():.1f}] x2 [{d[:, 2].min():.1f}, {d[:, 2].max():.1f}]")
            continue
        t = y[0].T  # [N, rows]
        sc = t[:, 4:5] if pose else t[:, 4:]
        print(f"  {photo}: class scores [{sc.min():.3g}, {sc.max():.3g}] (mean {sc.mean():.3g}), "
              f"{int((sc.max(axis=1) > 0.25).sum())} anchors above 0.25; boxes cx "
              f"[{t[:, 0].min():.1f}, {t[:, 0].max():.1f}] w [{t[:, 2].min():.1f}, {t[:, 2].max():.1f}]")


if __name__ == "__main__":
    names = [a for a in sys.argv[1:] if not a.startswith("--")] or MODELS
    unknown = set(names) - set(MODELS)
    if unknown:
        sys.exit(f"unknown model(s) {sorted(unknown)}; choose from {MODELS}")
    try:
        for name in names:
            if "--verify-only" not in sys.argv:
                export(name)
            verify(name)
    finally:
        shutil.rmtree(_TMP, ignore_errors=True)
