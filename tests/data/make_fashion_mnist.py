"""Writes a small Fashion-MNIST ImageFolder tree for the trainer's tests and demos.

Source: Debian's dataset-fashion-mnist (MIT), /usr/share/datasets/fashion-mnist/*.gz, IDX
files of 28×28 grayscale images. Takes the first N images of each chosen class from the
training file for train/ and val/, and from the t10k file for test/, and writes them as
8-bit grayscale PNGs: OUT/{train,val,test}/<class>/<index>.png. Standard library only.

    python3 tests/data/make_fashion_mnist.py OUT [--train 100 --val 25 --test 25]
        [--classes T-shirt,Trouser,Sneaker,Bag]
"""

import argparse
import gzip
import struct
import sys
import zlib
from pathlib import Path

SOURCE = Path("/usr/share/datasets/fashion-mnist")
NAMES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle-boot"]


def read_idx(path):
    data = gzip.open(path).read()
    magic, count = struct.unpack(">II", data[:8])
    if magic == 2051:
        rows, cols = struct.unpack(">II", data[8:16])
        size = rows * cols
        return [data[16 + i * size: 16 + (i + 1) * size] for i in range(count)], (cols, rows)
    if magic == 2049:
        return list(data[8:8 + count]), None
    raise SystemExit(f"{path}: not an IDX image or label file")


def png_gray(pixels, width, height):
    raw = b"".join(b"\x00" + pixels[y * width:(y + 1) * width] for y in range(height))
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--train", type=int, default=100)
    ap.add_argument("--val", type=int, default=25)
    ap.add_argument("--test", type=int, default=25)
    ap.add_argument("--classes", default="T-shirt,Trouser,Sneaker,Bag")
    args = ap.parse_args()
    if not SOURCE.is_dir():
        raise SystemExit(f"{SOURCE} is missing: install Debian's dataset-fashion-mnist")
    wanted = args.classes.split(",")
    for c in wanted:
        if c not in NAMES:
            raise SystemExit(f"unknown class {c!r}; choose from {NAMES}")
    train_images, (w, h) = read_idx(SOURCE / "train-images-idx3-ubyte.gz")
    train_labels, _ = read_idx(SOURCE / "train-labels-idx1-ubyte.gz")
    test_images, _ = read_idx(SOURCE / "t10k-images-idx3-ubyte.gz")
    test_labels, _ = read_idx(SOURCE / "t10k-labels-idx1-ubyte.gz")
    written = 0
    for name in wanted:
        k = NAMES.index(name)
        from_train = [i for i, l in enumerate(train_labels) if l == k][: args.train + args.val]
        from_test = [i for i, l in enumerate(test_labels) if l == k][: args.test]
        plan = [("train", train_images, from_train[: args.train]), ("val", train_images, from_train[args.train:]),
                ("test", test_images, from_test)]
        for split, images, indices in plan:
            folder = args.out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in indices:
                (folder / f"{i:05d}.png").write_bytes(png_gray(images[i], w, h))
                written += 1
    print(f"{written} images in {args.out}")


if __name__ == "__main__":
    sys.exit(main())
