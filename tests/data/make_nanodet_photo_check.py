"""Writes tests/fixtures/nanodet-photos/: COCO ground truth for five bundled photos, with
boxes drawn by eye on the photos (not taken from a model), and what pycocotools' COCOeval
(bbox) computes for the bundled NanoDet-m's own detections of them. The test
`the_pretrained_detector_scores_as_pycocotools_scores_it` runs `vigil eval` on the same
photos and ground truth and must give the same mAP50 and mAP50-95.

The detections are vigil's: `vigil infer --json --threshold 0.001` (the score floor
`vigil eval` uses for mAP; NMS and max_detections from the manifest), so the check is of
the evaluation path — boxes mapped back to the image, classes named, COCO's matching — not
of the model.

    python3 tests/data/make_nanodet_photo_check.py target/debug/vigil   (needs pycocotools)
"""

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "nanodet-photos"

# Boxes as [x1, y1, x2, y2] in the photo's pixels, drawn by eye; class names from
# models/labels/coco-80.txt.
TRUTH = {
    "astronaut.png": [("person", [18, 14, 362, 512])],
    "chelsea.png": [("cat", [0, 0, 400, 300])],
    "coffee.png": [("cup", [173, 18, 410, 305]), ("spoon", [325, 66, 425, 326]), ("dining table", [0, 0, 600, 400])],
    "group.png": [
        ("person", [28, 42, 305, 724]),
        ("person", [105, 8, 490, 724]),
        ("person", [368, 50, 660, 724]),
        ("person", [560, 45, 932, 724]),
        ("cell phone", [418, 408, 476, 447]),
    ],
    "motorcycle_left.png": [
        ("motorcycle", [90, 85, 686, 452]),
        ("bicycle", [0, 130, 45, 230]),
        ("bench", [40, 105, 285, 308]),
    ],
}


def main():
    vigil = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target" / "debug" / "vigil")
    labels = (ROOT / "models" / "labels" / "coco-80.txt").read_text().split("\n")
    labels = [l for l in labels if l]
    used = sorted({name for boxes in TRUTH.values() for name, _ in boxes}, key=labels.index)
    categories = [{"id": labels.index(n) + 1, "name": n} for n in used]
    images, annotations, detections = [], [], []
    for image_id, (file, boxes) in enumerate(sorted(TRUTH.items()), start=1):
        out = subprocess.run(
            [vigil, "infer", "--model", "models/nanodet-m.toml", "--json", "--threshold", "0.001",
             f"tests/photos/{file}"],
            cwd=ROOT, check=True, capture_output=True, text=True).stdout
        result = json.loads(out)
        images.append({"id": image_id, "file_name": file, "width": result["width"], "height": result["height"]})
        for name, (x1, y1, x2, y2) in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": labels.index(name) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        for d in result["detections"]:
            b = d["box"]
            detections.append({"image_id": image_id, "category_id": d["class_id"] + 1, "score": d["score"],
                               "bbox": [b["x1"], b["y1"], b["x2"] - b["x1"], b["y2"] - b["y1"]]})
    truth = {"images": images, "annotations": annotations, "categories": categories}
    gt = COCO()
    gt.dataset = json.loads(json.dumps(truth))
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(detections)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "instances_test.json").write_text(json.dumps(truth, indent=1) + "\n")
    expected = {"map50_95": float(ev.stats[0]), "map50": float(ev.stats[1]), "detections": len(detections)}
    (OUT / "pycocotools.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(expected)


if __name__ == "__main__":
    main()
