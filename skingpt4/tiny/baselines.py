"""Trivial pixel classifiers of the synthetic world: how hard it is, in figures a reader can compare with the
pipeline (the main job's summary and the ablation table print them beside it).

    python -m skingpt4.tiny.baselines --data data/synthetic

  rgb_histogram_logreg  multinomial logistic regression on the 4x4x4 RGB histogram of the pixels (64 features,
                        standardised; full-batch L-BFGS with a small L2 penalty), fitted on the train split
  hue_histogram_1nn     1-nearest-neighbour (L1 distance) on a 24-bin hue histogram weighted by saturation

Both read the prepared Dermnet train / test folders (filter_cap.json + image/, the class in each record's
`label`) and score held-out accuracy. In the first synthetic world the lesion colour was the class and these got
99% and 100%; the world of `world.py` shares colours within confusable pairs, so they must stay low
(tests/test_tiny_world.py holds the histogram baseline under 60% on a fixed seed). Plain torch and numpy: a
logistic regression and a nearest neighbour are a few lines, not worth a scikit-learn dependency.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

READ_SIZE = 64      # images are reduced to this side first: a histogram needs no detail
HUE_BINS = 24


def rgb_histogram(image: Image.Image, bins: int = 4) -> np.ndarray:
    """The share of pixels in each of bins^3 RGB cells."""
    pixels = np.asarray(image.convert("RGB").resize((READ_SIZE, READ_SIZE), Image.BILINEAR)).reshape(-1, 3)
    cells = (pixels.astype(np.int64) * bins) // 256
    index = (cells[:, 0] * bins + cells[:, 1]) * bins + cells[:, 2]
    return np.bincount(index, minlength=bins ** 3).astype(np.float64) / len(index)


def hue_histogram(image: Image.Image, bins: int = HUE_BINS) -> np.ndarray:
    """Hue histogram weighted by saturation (grey and skin-coloured pixels weigh little), summing to 1."""
    hsv = np.asarray(image.convert("RGB").resize((READ_SIZE, READ_SIZE), Image.BILINEAR).convert("HSV"))
    hsv = hsv.reshape(-1, 3).astype(np.float64)
    hist = np.bincount((hsv[:, 0] * bins // 256).astype(np.int64), weights=hsv[:, 1], minlength=bins)
    return hist / max(hist.sum(), 1e-9)


def logistic_regression(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, l2: float = 1e-3,
                        iterations: int = 200) -> np.ndarray:
    """Predicted class indices of a multinomial logistic regression (standardised features, L-BFGS)."""
    mean, spread = x_train.mean(0), x_train.std(0) + 1e-6
    a = torch.tensor((x_train - mean) / spread, dtype=torch.float64)
    b = torch.tensor((x_test - mean) / spread, dtype=torch.float64)
    y = torch.tensor(y_train, dtype=torch.long)
    n_classes = int(y.max()) + 1
    weight = torch.zeros(a.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(a @ weight + bias, y) + l2 * (weight ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return (b @ weight + bias).argmax(1).numpy()


def nearest_neighbour(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Predicted labels of a 1-nearest-neighbour classifier (L1 distance; ties: the first training image)."""
    distances = np.abs(x_test[:, None, :] - x_train[None, :, :]).sum(-1)
    return y_train[distances.argmin(1)]


def read_prepared(folder: Path) -> tuple[list[Image.Image], list[str]]:
    """The images and class labels of a prepared folder (filter_cap.json + image/)."""
    records = json.loads((Path(folder) / "filter_cap.json").read_text())["annotations"]
    images = []
    for r in records:
        with Image.open(Path(folder) / "image" / f"{r['image_id']}.jpg") as image:
            images.append(image.convert("RGB"))
    return images, [r["label"] for r in records]


def baselines(train: tuple[Sequence[Image.Image], Sequence[str]],
              test: tuple[Sequence[Image.Image], Sequence[str]]) -> dict:
    """Held-out accuracy of both trivial classifiers, fitted on `train` = (images, labels)."""
    classes = sorted(set(train[1]))
    index = {c: i for i, c in enumerate(classes)}
    y_train = np.array([index[c] for c in train[1]])
    y_test = np.array([index.get(c, -1) for c in test[1]])
    result = {"n_train": len(y_train), "n_test": len(y_test), "chance": 1 / len(classes)}
    for name, features, classify in (("rgb_histogram_logreg", rgb_histogram, logistic_regression),
                                     ("hue_histogram_1nn", hue_histogram, nearest_neighbour)):
        x_train = np.stack([features(im) for im in train[0]])
        x_test = np.stack([features(im) for im in test[0]])
        result[name] = float((classify(x_train, y_train, x_test) == y_test).mean())
    return result


def dermnet_baselines(data: Path) -> dict:
    """The baselines on a make_synthetic folder: fitted on prepared/dermnet, scored on prepared/dermnet_test."""
    return baselines(read_prepared(Path(data) / "prepared" / "dermnet"),
                     read_prepared(Path(data) / "prepared" / "dermnet_test"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/synthetic"), help="make_synthetic.py output")
    args = parser.parse_args(argv)
    for sub in ("dermnet", "dermnet_test"):
        if not (args.data / "prepared" / sub / "filter_cap.json").is_file():
            print(f"error: '{args.data / 'prepared' / sub}' is not a prepared folder "
                  "(run python -m data_prep.make_synthetic)", file=sys.stderr)
            return 2
    result = dermnet_baselines(args.data)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
