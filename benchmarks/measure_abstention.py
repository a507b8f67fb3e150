"""How often the differential abstains, and why, on the tiny world: held-out synthetic images, blank images and RGB
noise, with and without a calibration (docs/evaluation.md, "Differential"; the figures quoted there come from
this script).

    python -m benchmarks.measure_abstention --ckpt tiny_assets/skingpt4_tiny.pth \
        --test data/synthetic/raw/dermnet/test --out output/abstention

It draws a fresh validation split of the tiny world (`--val-per-class` images for each of the 16 classes, a seed
no dataset uses), fits the calibration on it (`evaluate.py --task calibrate`, written next to a copy of the
checkpoint under --out), and then scores every image of `--test` plus 5 blank and 20 noise images as chat and
the demo do (`DifferentialScorer.assess`, with the photo). It prints, per group and for "calibrated" and
"uncalibrated" (and "cal., no photo": calibrated, the out-of-distribution distance alone, as for a front end
that passes no photo), the top-1 accuracy, the share that abstains and by which reason, the top-1 accuracy of the
answered held-out images, and the share the old rule (top probability at T = 1 >= 0.5, no other check) would
have answered.
"""
from __future__ import annotations

import argparse
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from skingpt4.chat import ChatEngine
from skingpt4.chat.differential import DifferentialScorer, class_answers, load_calibration
from skingpt4.common.class_table import dermnet_mapping
from skingpt4.common.images import load_image
from skingpt4.evaluation import calibration as cal
from skingpt4.evaluation import tasks
from skingpt4.evaluation.cases import load_cases
from skingpt4.evaluation.extract import ClassExtractor
from skingpt4.models import build_model
from skingpt4.tiny.world import lesion_image

DRAW_SIZE = 256  # the tiny world's size (data_prep/make_synthetic.py)


def draw_validation(root: Path, per_class: int, seed: int) -> Path:
    """A Dermnet-layout folder: `per_class` drawings of each class, dealt over the folders that feed it."""
    mapping = dermnet_mapping()["folders"]
    folders = sorted(mapping)
    by_class: dict[str, list[int]] = {}
    for index, folder in enumerate(folders):
        if mapping[folder]:
            by_class.setdefault(mapping[folder], []).append(index)
    rng = np.random.default_rng(seed)
    for indices in by_class.values():
        for j in range(per_class):
            index = indices[j % len(indices)]
            (root / folders[index]).mkdir(parents=True, exist_ok=True)
            lesion_image(rng, DRAW_SIZE, int(rng.integers(1, 7)), index).save(
                root / folders[index] / f"val-{j:03d}.jpg", quality=92)
    return root


def odd_images() -> dict[str, list[Image.Image]]:
    blanks = [Image.new("RGB", (DRAW_SIZE, DRAW_SIZE), c)
              for c in ((128, 128, 128), (236, 192, 158), (0, 0, 0), (255, 255, 255), (84, 52, 34))]
    noise = [Image.fromarray(np.random.default_rng(1000 + s).integers(0, 256, (DRAW_SIZE, DRAW_SIZE, 3),
                                                                       dtype=np.uint8)) for s in range(20)]
    return {"blank": blanks, "noise": noise}


def measure(engine, scorer, calibration, images, labels=None, with_photo=True) -> dict:
    reasons, answered, correct, old_rule, top1 = Counter(), 0, 0, 0, 0
    for i, image in enumerate(images):
        with torch.no_grad():
            embeds = engine.model.encode_image(engine.image_processor(image).unsqueeze(0))
        result = scorer.assess(embeds, calibration, image if with_photo else None)
        reasons[result.abstain_reason or "answered"] += 1
        old_rule += scorer.differential(embeds, 1.0, 0.5).ranked[0][1] >= 0.5
        top1 += labels is not None and result.top == labels[i]
        if not result.abstained:
            answered += 1
            correct += labels is not None and result.top == labels[i]
    n = len(images)
    return {"n": n, "abstained": 1 - reasons["answered"] / n,
            "by_reason": {k: v / n for k, v in sorted(reasons.items()) if k != "answered"},
            "accuracy_answered": correct / answered if labels is not None and answered else None,
            "top1": top1 / n if labels is not None else None,
            "old_rule_answered": old_rule / n}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="the projection checkpoint (tiny variant)")
    parser.add_argument("--test", required=True, type=Path, help="held-out images in the Dermnet folder layout")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--val-per-class", type=int, default=6)
    parser.add_argument("--length-norm", default="none", choices=("none", "mean"))
    parser.add_argument("--seed", type=int, default=4242)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt = args.out / "projection.pth"
    shutil.copy(args.ckpt, ckpt)
    validation = draw_validation(args.out / f"val-{args.seed}", args.val_per_class, args.seed)
    cfg = OmegaConf.create({"model": {"variant": "tiny", "ckpt": str(ckpt)},
                            "evaluation": {"cases": str(args.test),
                                           "differential": {"validation_cases": str(validation),
                                                            "length_norm": args.length_norm}}})
    engine = ChatEngine(build_model(cfg.model))
    try:
        tasks.TASKS["calibrate"].run(tasks.EvalContext(cfg, args.out / "calibrate", chat=engine))
    except cal.CalibrationRefused as err:
        print(f"calibration refused: {err}")
    calibration = load_calibration(ckpt, engine.model)
    scorer = DifferentialScorer(engine.model, class_answers(), length_norm=args.length_norm)
    cases, _ = load_cases(args.test, ClassExtractor(), "Others", None, False)
    groups = {"held-out": ([load_image(c.image) for c in cases], [c.label for c in cases]),
              **{name: (images, None) for name, images in odd_images().items()}}
    print(f"{'group':<9} {'calibration':<12} {'n':>4} {'top-1':>6} {'abstain':>8} {'answered acc':>13} "
          f"{'old rule':>9}  reasons")
    for name, (images, labels) in groups.items():
        for label, used, with_photo in (("calibrated", calibration, True), ("uncalibrated", None, True),
                                        ("cal., no photo", calibration, False)):
            if used is None and label != "uncalibrated":
                continue
            m = measure(engine, scorer, used, images, labels, with_photo)
            acc = f"{m['accuracy_answered']:.1%}" if m["accuracy_answered"] is not None else "-"
            reasons = ", ".join(f"{k} {v:.1%}" for k, v in m["by_reason"].items())
            top1 = f"{m['top1']:.1%}" if m["top1"] is not None else "-"
            print(f"{name:<9} {label:<12} {m['n']:>4} {top1:>6} {m['abstained']:>8.1%} {acc:>13} "
                  f"{m['old_rule_answered']:>9.1%}  {reasons}")
    if calibration:
        print(f"T = {calibration.temperature:.4g}, abstain_below {calibration.abstain_below}, out-of-distribution "
              f"threshold {calibration.ood.threshold:.4f} over {len(calibration.ood.features)} validation images")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
