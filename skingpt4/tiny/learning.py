"""Did the pipeline learn? The closing report of the tiny main job (scripts/main_job.sh), in one process:

    python -m skingpt4.tiny.learning --run output/main_job/<stamp> --data data/synthetic

It reads the two training runs (`<run>/step1`, `<run>/step2`) and evaluates, on the held-out synthetic cases,
with greedy decoding:
  - the frozen encoders: a nearest-centroid probe on the Q-Former outputs of the Dermnet train/test splits,
    for the pretrained tiny Q-Former and for a random one (what the tiny assets used to be);
  - diagnosis accuracy and macro-F1 (cases/dermnet_test.csv, with Fitzpatrick strata) of the untrained
    projection (step 0), the step-1 and the step-2 checkpoints, against chance;
  - concept recall (cases/skincon_test.csv) of the same three;
  - the image-reliance control of the step-2 checkpoint (blank, noise and shuffled images);
  - one clinical conversation (the four prompts) with the step-2 checkpoint.
  - the trivial pixel baselines on the same split (skingpt4/tiny/baselines.py), so the reader sees how hard the
    world is.
It prints a summary for a newcomer, writes `<run>/learning/summary.json` and fails (exit status 1) when
learning did not happen: see `checks`. The checks are relative -- to the untrained projection, to the pixel
baselines, to chance -- with 95% bootstrap intervals over the held-out cases, not fixed percentages.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

import torch

from skingpt4.common.config import load_config
from skingpt4.evaluation import tasks
from skingpt4.evaluation.image_control import image_control
from skingpt4.evaluation.sessions import run_sessions
from skingpt4.models.loading import load_projection
from skingpt4.prompting.clinical import CLINICAL_PROMPTS

EVAL_CONFIG = Path("eval_configs/main_job.yaml")  # the main job's evaluation settings (greedy), from the repository


@dataclass
class Thresholds:
    confidence: float = 0.95             # bootstrap intervals over the held-out cases
    max_blank_times_chance: float = 2.0  # blank-image accuracy <= this x chance (the model must need the image)
    resamples: int = 2000


def bootstrap_low(correct: Sequence[bool], baseline: Sequence[bool] | float, t: Thresholds, seed: int = 0) -> float:
    """Lower end of the bootstrap interval (over cases) of accuracy(correct) - accuracy(baseline); `baseline` is
    per case (the same cases, paired) or a fixed accuracy."""
    rng = np.random.default_rng(seed)
    a = np.asarray(correct, dtype=float)
    b = np.asarray(baseline, dtype=float) if not isinstance(baseline, float) else np.full_like(a, baseline)
    picks = rng.integers(0, len(a), (t.resamples, len(a)))
    gains = a[picks].mean(1) - b[picks].mean(1)
    return float(np.percentile(gains, 100 * (1 - t.confidence) / 2))


def _context(cfg_path: Path, out: Path, cases: Path, assets: Path, chat=None, options=()) -> tasks.EvalContext:
    cfg = load_config(cfg_path, [f"model.ckpt={assets / 'projection.pth'}", f"evaluation.cases={cases}", *options])
    return tasks.EvalContext(cfg, out, chat=chat)


@torch.no_grad()
def probe(model, train_folder: Path, test_folder: Path, seed: int = 0) -> dict:
    """Held-out nearest-centroid accuracy on the Q-Former outputs (class labels of prepared Dermnet sets), for
    the model's pretrained encoders and for freshly initialised random ones."""
    from skingpt4.common.images import load_image
    from skingpt4.tiny.assets import TINY_QFORMER, TINY_VISION
    from skingpt4.tiny.encoders import TinyEncoders, centroid_probe
    from skingpt4.processors.image import Blip2ImageEvalProcessor

    processor = Blip2ImageEvalProcessor(image_size=model.cfg.vision.image_size)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        random_encoders = TinyEncoders(TINY_VISION, TINY_QFORMER).eval()

    def read(folder: Path):
        records = json.loads((folder / "filter_cap.json").read_text())["annotations"]
        images = torch.stack([processor(load_image(folder / "image" / f"{r['image_id']}.jpg")) for r in records])
        chunks = lambda encode: torch.cat([encode(images[i:i + 64]) for i in range(0, len(images), 64)])  # noqa: E731
        return chunks(model.encode_queries), chunks(random_encoders), [r["label"] for r in records]

    (train_ours, train_random, y_train), (test_ours, test_random, y_test) = read(train_folder), read(test_folder)
    return {"pretrained": centroid_probe(train_ours, y_train, test_ours, y_test),
            "random": centroid_probe(train_random, y_train, test_random, y_test),
            "chance": 1 / len(set(y_test)), "train_images": len(y_train), "test_images": len(y_test)}


def losses(step_dir: Path) -> dict:
    from skingpt4.runners.metrics import read_metrics

    records = read_metrics(step_dir / "metrics.jsonl")
    values = [r["loss"] for r in records]
    head, tail = values[:3], values[-3:]
    return {"first": sum(head) / len(head), "last": sum(tail) / len(tail), "steps": records[-1]["step"],
            "losses": values}


def learning_report(run: Path, data: Path, assets: Path, thresholds: Optional[Thresholds] = None,
                    eval_cfg: Path = EVAL_CONFIG) -> dict:
    thresholds = thresholds or Thresholds()
    out = run / "learning"
    checkpoints = {"untrained": assets / "projection.pth", "step1": run / "step1" / "checkpoint_last.pth",
                   "step2": run / "step2" / "checkpoint_last.pth"}
    summary: dict = {"run": str(run), "loss": {s: losses(run / s) for s in ("step1", "step2")}}
    tables = io.StringIO()  # the tasks' own tables go to summary.json, not between the summary's lines
    with contextlib.redirect_stdout(tables):
        _evaluate(summary, run, data, assets, out, checkpoints, functools.partial(_context, eval_cfg))
    summary["checks"] = checks(summary, thresholds)
    summary["passed"] = all(ok for _, ok, _ in summary["checks"])
    summary["thresholds"] = asdict(thresholds)
    summary["task_tables"] = tables.getvalue()
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _evaluate(summary: dict, run: Path, data: Path, assets: Path, out: Path, checkpoints: dict, context) -> None:
    ablation = [f"evaluation.ablation.checkpoints.{k}={v}" for k, v in checkpoints.items()]
    diagnosis_ctx = context(out / "diagnosis", data / "cases" / "dermnet_test.csv", assets, options=ablation)
    engine = diagnosis_ctx.engine
    summary["probe"] = probe(engine.model, data / "prepared" / "dermnet", data / "prepared" / "dermnet_test")
    rows = tasks.ablation(diagnosis_ctx)["rows"]
    by_skin = json.loads((out / "diagnosis" / "step2" / "summary.json").read_text())["diagnosis"]["by_skin_type"]
    summary["diagnosis"] = {r["checkpoint"]: {k: r[k] for k in ("accuracy", "macro_f1", "unknown_rate")} for r in rows}
    summary["diagnosis_by_skin_type"] = by_skin
    summary["chance"] = summary["probe"]["chance"]
    summary["per_case_correct"] = {name: _per_case(out / "diagnosis" / name / "predictions.csv") for name in checkpoints}
    from skingpt4.tiny.baselines import dermnet_baselines

    summary["baselines"] = dermnet_baselines(data)

    concept_ctx = context(out / "concepts", data / "cases" / "skincon_test.csv", assets, engine, ablation)
    summary["concept_recall"] = {r["checkpoint"]: r["concept_micro_recall"] for r in tasks.ablation(concept_ctx)["rows"]}

    load_projection(engine.model, str(checkpoints["step2"]))
    control_ctx = context(out / "image_control", data / "cases" / "dermnet_test.csv", assets, engine)
    control_ctx.checkpoint = str(checkpoints["step2"])
    control_ctx.out.mkdir(parents=True, exist_ok=True)
    summary["image_control"] = image_control(control_ctx)["conditions"]

    cases, _ = control_ctx.cases(limit=1)
    sessions, _ = run_sessions(engine, cases, CLINICAL_PROMPTS, control_ctx.ev.decoding, batch_size=1, seed=0)
    turns = [(a["prompt"], a["answer"]) for a in sessions[0].answers]
    summary["example"] = {"case": cases[0].case_id, "label": cases[0].label, "turns": turns,
                          "diagnosis": control_ctx.extractor.extract(turns[0][1]).label}


def _per_case(predictions: Path) -> dict[str, bool]:
    import csv

    with predictions.open(encoding="utf-8") as f:
        return {r["case_id"]: r["predicted"] == r["label"] for r in csv.DictReader(f)}


def checks(summary: dict, t: Thresholds) -> list[tuple[str, bool, str]]:
    chance, diag, per_case = summary["chance"], summary["diagnosis"], summary["per_case_correct"]
    trained, untrained = diag["step2"]["accuracy"] or 0.0, diag["untrained"]["accuracy"] or 0.0
    blank = summary["image_control"]["blank"]["accuracy"] or 0.0
    falling = all(v["last"] < v["first"] for v in summary["loss"].values())
    cases = sorted(per_case["step2"])
    step2 = [per_case["step2"][c] for c in cases]
    base = summary["baselines"]
    best_name = max(("rgb_histogram_logreg", "hue_histogram_1nn"), key=base.__getitem__)
    best = base[best_name]
    ci = f"{t.confidence:.0%} bootstrap interval over {len(cases)} cases"
    gain_untrained = bootstrap_low(step2, [per_case["untrained"][c] for c in cases], t)
    gain_baseline = bootstrap_low(step2, float(best), t)
    recall = summary["concept_recall"]
    return [
        ("loss fell in both steps", falling, ", ".join(f"{s} {v['first']:.3f} -> {v['last']:.3f}"
                                                        for s, v in summary["loss"].items())),
        ("step 1 taught the concepts (concept recall above the untrained projection's)",
         (recall["step1"] or 0) > (recall["untrained"] or 0),
         f"{recall['step1'] or 0:.1%} vs {recall['untrained'] or 0:.1%}"),
        ("step 2 above the untrained projection (paired gain, " + ci + ", above 0)", gain_untrained > 0,
         f"{trained:.1%} vs {untrained:.1%}; gain >= {gain_untrained:+.1%}"),
        ("step 2 above the best trivial pixel baseline (" + ci + ")", gain_baseline > 0,
         f"{trained:.1%} vs {best:.1%} ({best_name}); margin >= {gain_baseline:+.1%}"),
        (f"blank image <= {t.max_blank_times_chance:g} x chance (the answer needs the image)",
         blank <= t.max_blank_times_chance * chance, f"{blank:.1%} vs chance {chance:.1%}"),
    ]


def format_summary(s: dict, seconds: Optional[float] = None) -> str:
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    lines = ["", "==================== main job summary ====================",
             "The tiny SkinGPT-4: frozen pretrained tiny encoders and LLM (tiny_assets/build.json), the projection",
             "trained here on synthetic data. It is NOT a diagnostic model; it shows that the pipeline learns.", ""]
    for step, what in (("step1", "SKINCON concepts"), ("step2", "Dermnet classes + notes")):
        v = s["loss"][step]
        lines.append(f"loss, {step} ({what}): {v['first']:.3f} -> {v['last']:.3f} over {v['steps']} steps "
                     "(mean of the first / last 3 logged)")
    p = s["probe"]
    lines += ["", f"Q-Former outputs carry the class (held-out nearest-centroid probe, {p['test_images']} images): "
                  f"pretrained {pct(p['pretrained'])}, random {pct(p['random'])}, chance {pct(p['chance'])}",
              "", f"held-out diagnosis ({p['test_images']} cases, greedy; chance {pct(s['chance'])}):",
              f"  {'projection':<12}{'accuracy':>10}{'macro-F1':>10}{'unknown':>10}{'concept recall':>16}"]
    for name, label in (("untrained", "untrained"), ("step1", "step 1"), ("step2", "step 2")):
        d = s["diagnosis"][name]
        lines.append(f"  {label:<12}{pct(d['accuracy']):>10}{d['macro_f1'] or 0:>10.3f}{pct(d['unknown_rate']):>10}"
                     f"{pct(s['concept_recall'][name]):>16}")
    for scale, groups in s["diagnosis_by_skin_type"].items():  # {scale: [{group, n, accuracy, ...}]}
        strata = ", ".join(f"{g['group']} {pct(g['accuracy'])}" for g in groups)
        lines.append(f"  step 2 by skin type ({scale}): {strata}")
    b = s["baselines"]
    lines.append(f"  trivial pixel baselines, same split (fitted on {b['n_train']} training images): RGB-histogram "
                 f"logistic regression {pct(b['rgb_histogram_logreg'])}, hue-histogram 1-NN "
                 f"{pct(b['hue_histogram_1nn'])}")
    lines += ["",
              "image-reliance control (step 2, the same cases with other images):"]
    for condition, c in s["image_control"].items():
        extra = f", names the shown image's class {pct(c['follows_donor'])}" if c["follows_donor"] is not None else ""
        lines.append(f"  {condition:<9} accuracy {pct(c['accuracy']):>6}, answers changed {pct(c['answers_changed'])}"
                     f"{extra}")
    lines += ["", f"example conversation (step 2, case {s['example']['case']}, true class {s['example']['label']}):"]
    for question, answer in s["example"]["turns"]:
        lines += [f"  Q: {question}", f"  A: {answer}"]
    example = s["example"]
    lines.append(f"  (the first held-out case, not a chosen one; the diagnosis read from answer 1 is "
                 f"{example['diagnosis']}: {'right' if example['diagnosis'] == example['label'] else 'wrong'})")
    lines += ["", "checks:"] + [f"  [{'ok' if ok else 'FAILED'}] {name}: {text}" for name, ok, text in s["checks"]]
    verdict = "the pipeline learned" if s["passed"] else "LEARNING DID NOT HAPPEN (see the failed checks)"
    lines.append(f"result: {verdict}" + (f"; total time {seconds:.0f} s" if seconds is not None else ""))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="the main job's run folder (step1/, step2/)")
    parser.add_argument("--data", type=Path, default=Path("data/synthetic"), help="make_synthetic.py output")
    parser.add_argument("--assets", type=Path, default=None, help="tiny assets (default $SKINGPT4_TINY_ASSETS)")
    parser.add_argument("--seconds", type=float, default=None, help="time so far, printed with the result")
    parser.add_argument("--cfg-path", type=Path, default=EVAL_CONFIG, help=f"evaluation config (default {EVAL_CONFIG})")
    args = parser.parse_args(argv)
    import os

    assets = args.assets or Path(os.environ.get("SKINGPT4_TINY_ASSETS", "tiny_assets"))
    for path in (args.cfg_path, args.run / "step1" / "checkpoint_last.pth", args.run / "step2" / "checkpoint_last.pth",
                 args.data / "cases" / "dermnet_test.csv", assets / "projection.pth"):
        if not path.is_file():
            print(f"error: '{path}' not found (run scripts/main_job.sh, which makes it)", file=sys.stderr)
            return 2
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    summary = learning_report(args.run, args.data, assets, eval_cfg=args.cfg_path)
    print(format_summary(summary, args.seconds))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
