"""Export a randomly initialised RT-DETR-l to ONNX -> tests/models/rtdetr-l-random.onnx.
TEST MODEL ONLY (random weights, not bundled, not committed: 130 MB). tests/models.rs checks
vigil's decoding against its fixture's committed raw outputs either way, and the graph
itself against onnxruntime when this script has built it.

Source: PyPI package ultralytics 8.4.190 (AGPL-3.0 licence), model definition
ultralytics/cfg/models/rt-detr/rtdetr-l.yaml (nc=80), the smallest RT-DETR its yamls allow.
No weights are downloaded: the model is built from the yaml after torch.manual_seed(0), its
BatchNorm statistics set from four test photos (see export_yolo.calibrate); ultralytics is
kept offline as in export_yolo.py.

The graph's output is the DETR layout other exporters give (RT-DETR's own repository,
D-FINE, older ultralytics): "output0" float32 [1, 300, 84] = per query cx, cy, w, h
(fractions of the input), then 80 class probabilities (sigmoid). ultralytics 8.4.190 would
also take the top 300 (query, class) pairs inside the graph ([1, 300, 6]: cx, cy, w, h,
score, class); the export here stops just before that step (RTDETRDecoder.postprocess), so
that tests/fixtures/make_fixtures.py can apply that very step to the raw output and give
both layouts a reference. Input "images" [1, 3, 320, 320], RGB, pixel/255, stretched (as
ultralytics' RT-DETR predictor resizes).
"""
import os
import pathlib
import shutil
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import export_yolo  # noqa: E402  (sets ultralytics offline, owns the temp folder)
from export_yolo import _TMP, SIZE, preprocess, report  # noqa: E402

OUT = export_yolo.OUT_DIR / "rtdetr-l-random.onnx"


def export():
    import onnx
    import torch
    from ultralytics import RTDETR
    from ultralytics.nn.modules.head import RTDETRDecoder
    from ultralytics.utils import SETTINGS

    SETTINGS.update({"sync": False})
    torch.manual_seed(0)
    cwd = os.getcwd()
    os.chdir(_TMP)
    raw_layout = lambda self, boxes, scores: torch.cat([boxes, scores], dim=-1)  # noqa: E731
    kept = RTDETRDecoder.postprocess
    try:
        model = RTDETR("rtdetr-l.yaml")
        net = model.model
        batch = torch.cat([torch.from_numpy(preprocess(n)) for n in
                           ["astronaut.png", "motorcycle_left.png", "chelsea.png", "coffee.png"]])
        for mod in net.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.reset_running_stats()
                mod.momentum = None
        net.train()
        with torch.no_grad():
            net(batch)
        net.eval()
        RTDETRDecoder.postprocess = raw_layout
        f = model.export(format="onnx", imgsz=SIZE, opset=17, batch=1, dynamic=False,
                         simplify=True, nms=False, device="cpu")
    finally:
        RTDETRDecoder.postprocess = kept
        os.chdir(cwd)
    m = onnx.load(os.path.join(_TMP, f))
    props = [p for p in m.metadata_props if p.key != "date"]
    del m.metadata_props[:]
    m.metadata_props.extend(props)
    onnx.save(m, str(OUT))


def verify():
    import numpy as np
    import onnxruntime as ort
    sess = ort.InferenceSession(str(OUT), providers=["CPUExecutionProvider"])
    report(OUT, sess)
    assert sess.get_outputs()[0].shape == [1, 300, 84], sess.get_outputs()[0].shape
    for photo in export_yolo.PHOTOS_TO_CHECK:
        y = sess.run(None, {"images": preprocess(photo)})[0][0]
        best = y[:, 4:].max(axis=1)
        print(f"  {photo}: best class probability per query [{best.min():.3g}, {best.max():.3g}], "
              f"{int((y[:, 4:] > 0.25).sum())} (query, class) pairs above 0.25; cx [{y[:, 0].min():.3f}, "
              f"{y[:, 0].max():.3f}] w [{y[:, 2].min():.3f}, {y[:, 2].max():.3f}]")
        assert np.isfinite(y).all()


if __name__ == "__main__":
    try:
        if "--verify-only" not in sys.argv:
            export()
        verify()
    finally:
        shutil.rmtree(_TMP, ignore_errors=True)
