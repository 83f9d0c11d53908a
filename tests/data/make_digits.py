"""Writes scikit-learn's handwritten digits (1 797 images of 8×8 pixels, 10 classes, 16 grey
levels; BSD-3-Clause) as an ImageFolder tree: OUT/{train,val,test}/<digit>/<index>.png, the
first N images of each class (in the file's order) for train/, the next ones for val/ and
test/. The recipe measurements in docs/training.md use it (`--train 100 --val 20 --test 50`).

    python3 tests/data/make_digits.py OUT [--train 100 --val 20 --test 50]

Needs scikit-learn (it reads the package's own copy of the data; nothing is downloaded).
"""

import argparse
from pathlib import Path

from make_fashion_mnist import png_gray  # the same folder: one 8-bit grey PNG writer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--train", type=int, default=100)
    ap.add_argument("--val", type=int, default=20)
    ap.add_argument("--test", type=int, default=50)
    args = ap.parse_args()
    from sklearn.datasets import load_digits

    digits = load_digits()
    split = [("train", args.train), ("val", args.val), ("test", args.test)]
    written = 0
    for digit in range(10):
        indices = [i for i, t in enumerate(digits.target) if t == digit]
        need = sum(n for _, n in split)
        if len(indices) < need:
            raise SystemExit(f"digit {digit} has {len(indices)} images, {need} asked for")
        start = 0
        for name, n in split:
            folder = args.out / name / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            for i in indices[start:start + n]:
                # 0–16 ink → white background, dark strokes, 0–255.
                pixels = bytes(255 - int(v) * 255 // 16 for v in digits.images[i].reshape(-1))
                (folder / f"{i}.png").write_bytes(png_gray(pixels, 8, 8))
                written += 1
            start += n
    print(f"{written} images in {args.out}")


if __name__ == "__main__":
    main()
