"""Writes tests/fixtures/coco-eval/fixture.json: seeded random ground truth and detections
in COCO's form, and what pycocotools' COCOeval (bbox) computes from them, for the test that
checks vigil's detection metrics (src/metrics/detection.rs) against it.

The data exercise what COCOeval does in corners: crowd boxes (iscrowd), an image with
detections and no ground truth, an image with neither, a category with detections and no
ground truth, more than 100 detections of a class in one image, tied scores, duplicate
detections of one object, and overlaps spread from 0.3 to 1 around every IoU threshold.
Coordinates and scores are rounded to 2 decimals, so the values survive a trip through f32.

    python3 tests/data/make_coco_eval_fixture.py   (needs pycocotools and numpy)
"""

import contextlib
import io
import json
import random
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "coco-eval" / "fixture.json"
CATEGORIES = [1, 2, 3, 7]  # 7: detections only, never in the ground truth
IMAGES = list(range(1, 15))
SIZE = 320.0


def r2(v):
    return round(v, 2)


def random_box(rng):
    w, h = rng.uniform(8, 120), rng.uniform(8, 120)
    x, y = rng.uniform(0, SIZE - w), rng.uniform(0, SIZE - h)
    return [r2(x), r2(y), r2(w), r2(h)]


def jitter(rng, box, amount):
    x, y, w, h = box
    dx, dy = rng.uniform(-amount, amount) * w, rng.uniform(-amount, amount) * h
    sw, sh = 1 + rng.uniform(-amount, amount), 1 + rng.uniform(-amount, amount)
    return [r2(x + dx), r2(y + dy), r2(max(1.0, w * sw)), r2(max(1.0, h * sh))]


def main():
    rng = random.Random(2026)
    truth, dets = [], []
    for image in IMAGES:
        if image == 14:
            continue  # neither ground truth nor detections
        n_truth = 0 if image == 13 else rng.randint(1, 7)
        for _ in range(n_truth):
            box = random_box(rng)
            crowd = rng.random() < 0.1
            truth.append({"image_id": image, "category_id": rng.choice(CATEGORIES[:3]), "bbox": box,
                          "iscrowd": int(crowd), "area": r2(box[2] * box[3])})
            gt = truth[-1]
            if rng.random() < 0.85:
                for copy in range(1 if rng.random() < 0.8 else 2):  # sometimes a duplicate
                    dets.append({"image_id": image, "category_id": gt["category_id"],
                                 "bbox": jitter(rng, box, rng.choice([0.02, 0.08, 0.15, 0.3])),
                                 "score": r2(rng.uniform(0.05, 1.0))})
        for _ in range(rng.randint(0, 4)):  # false positives, some of a class never labelled
            dets.append({"image_id": image, "category_id": rng.choice(CATEGORIES), "bbox": random_box(rng),
                         "score": r2(rng.uniform(0.05, 0.9))})
    # One image with 120 detections of one class: only the best 100 count.
    crowded = 5
    target = next(t for t in truth if t["image_id"] == crowded and not t["iscrowd"])
    for i in range(120):
        dets.append({"image_id": crowded, "category_id": target["category_id"],
                     "bbox": jitter(rng, target["bbox"], 0.3) if i % 10 == 0 else random_box(rng),
                     "score": r2(rng.uniform(0.3, 0.95))})
    for k, t in enumerate(truth, 1):
        t["id"] = k

    gt = COCO()
    gt.dataset = {"images": [{"id": i, "width": SIZE, "height": SIZE} for i in IMAGES],
                  "categories": [{"id": c, "name": f"c{c}"} for c in CATEGORIES],
                  "annotations": [dict(t) for t in truth]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes([dict(d) for d in dets])
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]  # [T, R, K, A, M]: area "all" is 0, maxDets 100 is -1
    per_class = {}
    for k, c in enumerate(CATEGORIES):
        p = precision[:, :, k, 0, -1]
        per_class[str(c)] = {
            "ap50": float(np.mean(p[0][p[0] > -1])) if (p[0] > -1).any() else None,
            "ap50_95": float(np.mean(p[p > -1])) if (p > -1).any() else None,
        }
    fixture = {
        "made_by": "tests/data/make_coco_eval_fixture.py with pycocotools COCOeval (bbox)",
        "images": IMAGES,
        "categories": CATEGORIES,
        "truth": [{k: t[k] for k in ("image_id", "category_id", "bbox", "iscrowd")} for t in truth],
        "detections": dets,
        "expected": {"map50_95": float(ev.stats[0]), "map50": float(ev.stats[1]), "per_class": per_class},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"{OUT}: {len(truth)} boxes ({sum(t['iscrowd'] for t in truth)} crowds), {len(dets)} detections, "
          f"mAP50-95 {ev.stats[0]:.4f}, mAP50 {ev.stats[1]:.4f}")


if __name__ == "__main__":
    main()
