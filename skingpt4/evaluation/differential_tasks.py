"""`evaluate.py --task calibrate` and `--task differential` (docs/evaluation.md, "Differential").

calibrate:    fit the softmax temperature of the differential on the validation split
              (`evaluation.differential.validation_cases`) and write it next to the projection checkpoint.
differential: on the evaluation cases (the held-out split): top-1 / top-3 accuracy, ECE (15 bins), Brier score and
              a reliability diagram before and after calibration, the coverage-accuracy curve of abstaining, a
              per-case CSV, all stratified by skin type where the cases have it.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Optional, Sequence

import torch

from skingpt4.chat.calibration_file import Calibration
from skingpt4.chat.differential import (DifferentialScorer, calibration_path, check_calibration_fits, class_answers,
                                        load_calibration, probabilities, write_calibration)
from skingpt4.chat.ood import OODReference, image_features
from skingpt4.common.config import ConfigError, ConfigPath, require_path
from skingpt4.common.images import ImageError, load_image
from skingpt4.evaluation import calibration as cal
from skingpt4.evaluation.cases import Case, load_cases
from skingpt4.evaluation.config import CASE_PATHS, CLASS_FILE, EvalTask
from skingpt4.evaluation.tables import clean_nan, finish_task, format_table, write_csv, write_json
from skingpt4.models.identity import model_identity

log = logging.getLogger("skingpt4.evaluation")


def scorer(ctx) -> DifferentialScorer:
    if getattr(ctx, "_differential_scorer", None) is None:
        ctx._differential_scorer = DifferentialScorer(ctx.engine.model, class_answers(ctx.ev.class_file),
                                                      ctx.ev.differential.question, ctx.ev.differential.length_norm)
    return ctx._differential_scorer


def score_cases(ctx, cases: Sequence[Case]) -> tuple[list[Case], torch.Tensor, list[dict]]:
    """-> (the cases scored, their class scores [N, C], problems). An unreadable image is a problem, not a stop."""
    return score_and_describe_cases(ctx, cases)[:3]


def score_and_describe_cases(ctx, cases: Sequence[Case]) -> tuple[list[Case], torch.Tensor, list[dict], torch.Tensor]:
    """`score_cases`, and the cases' image features [N, D] (`ood.py`) for the out-of-distribution check."""
    score, engine, kept, rows, features, problems = scorer(ctx), ctx.engine, [], [], [], []
    for case in cases:
        try:
            pixels = engine.image_processor(load_image(case.image)).unsqueeze(0)
        except ImageError as err:
            problems.append({"case_id": case.case_id, "image": str(case.image), "reason": str(err)})
            continue
        embeds = engine.model.encode_image(pixels)
        rows.append(score.scores(embeds).cpu())
        features.append(image_features(embeds))
        kept.append(case)
    if cases and not kept:
        raise ConfigError(f"no case could be scored; the first problem: {problems[0]['reason']}")
    if not rows:
        return kept, torch.zeros(0, len(score.classes)), problems, torch.zeros(0, 0)
    return kept, torch.stack(rows), problems, torch.cat(features)


def _labelled(ctx, cases: Sequence[Case], where: str) -> list[Case]:
    labelled = [c for c in cases if c.label is not None]
    if not labelled:
        raise ConfigError(f"{where} has no class labels: the differential needs labelled cases "
                          "(see docs/evaluation.md, 'Cases')")
    return labelled


def _labels(cases: Sequence[Case], classes: list[str]) -> torch.Tensor:
    return torch.tensor([classes.index(c.label) for c in cases], dtype=torch.long)


def _checkpoint(ctx) -> Optional[str]:
    return ctx.checkpoint or ctx.engine.model.cfg.ckpt


# ------------------------------------------------------------------------------------------------ calibrate
def calibrate(ctx) -> dict:
    checkpoint = _checkpoint(ctx)
    if not checkpoint:
        raise ConfigError("the calibration is written next to the projection checkpoint: set model.ckpt")
    source = require_path(ctx.ev.differential.validation_cases, VALIDATION_CASES.key, VALIDATION_CASES.what)
    cases, dropped = load_cases(source, ctx.extractor, ctx.ev.unplaced_dermnet_as, ctx.ev.limit,
                                ctx.ev.label_from_diagnosis, ctx.ev.cases_per_class, ctx.ev.seed)
    cases, scores, problems, features = score_and_describe_cases(ctx, _labelled(ctx, cases, f"'{source}'"))
    problems = [{**d, "image": None} for d in dropped] + problems
    labels = _labels(cases, scorer(ctx).classes)
    before = probabilities(scores, 1.0)  # non-finite scores (a broken model) stop here, in one line
    temperature = cal.fit_temperature(scores, labels)
    after = probabilities(scores, temperature)
    information = {"fitted_on": str(source), "n": len(cases), "checkpoint": str(checkpoint),
                   "nll_before": cal.nll(scores, labels, 1.0), "nll_after": cal.nll(scores, labels, temperature),
                   "before": cal.calibration_summary(before, labels), "after": cal.calibration_summary(after, labels),
                   "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    cal.plot_reliability({"before (T = 1)": cal.reliability_bins(before, labels),
                          f"after (T = {temperature:.3g})": cal.reliability_bins(after, labels)},
                         ctx.out / "reliability_validation.png")
    refused = cal.fit_problems(scores, labels, temperature)
    if refused:
        # nothing is written next to the checkpoint: an old file there is left as it is only if it still fits
        log.warning("calibration not saved: %s", "; ".join(refused))
        raise cal.CalibrationRefused(f"calibration not saved (fitted on '{source}'): {'; '.join(refused)}")
    ood = OODReference.fit(features)
    calibration = Calibration(temperature, float(ctx.ev.differential.abstain_below), ctx.ev.differential.length_norm,
                              ctx.ev.differential.question, model_identity(ctx.engine.model)["projection_sha256"],
                              ood, information)
    path = write_calibration(checkpoint, calibration)
    print(f"temperature {temperature:.4g} fitted on {len(cases)} validation case(s); ECE "
          f"{information['before']['ece']:.4f} -> {information['after']['ece']:.4f}; out-of-distribution distance "
          f"threshold {ood.threshold:.4f} ({ood.quantile:.0%} of the validation images' nearest-neighbour "
          f"distances); written to {path}")
    record = {key: value for key, value in calibration.as_json().items() if key != "ood"}
    record["ood_threshold"] = ood.threshold
    return finish_task(ctx.out, {"task": "calibrate", "calibration_file": str(path), **record}, problems)


# ------------------------------------------------------------------------------------------------ differential
def differential(ctx) -> dict:
    started = time.perf_counter()
    cases, problems = ctx.cases()
    cases, scores, failed, features = score_and_describe_cases(
        ctx, _labelled(ctx, cases, f"evaluation.cases '{ctx.ev.cases}'"))
    problems += failed
    model, classes = ctx.engine.model, scorer(ctx).classes
    fitted = load_calibration(_checkpoint(ctx), model)
    if fitted:
        check_calibration_fits(fitted, ctx.ev.differential.length_norm, ctx.ev.differential.question)
    temperature = fitted.temperature if fitted else 1.0
    threshold = ctx.ev.differential.abstain_below
    labels = _labels(cases, classes)
    before, after = probabilities(scores, 1.0), probabilities(scores, temperature)
    distances = (torch.cdist(features, fitted.ood.features).min(dim=1).values.tolist() if fitted and len(features)
                 else [None] * len(cases))
    rows = []
    for case, label, p, distance in zip(cases, labels.tolist(), after, distances):
        order = torch.argsort(p, descending=True).tolist()
        outside = distance is not None and distance > fitted.ood.threshold
        reason = ("uncalibrated" if not fitted else "out_of_distribution" if outside
                  else "low_confidence" if float(p[order[0]]) < threshold else "")
        rows.append({"case_id": case.case_id, "label": case.label, "top1": classes[order[0]],
                     "p_top1": float(p[order[0]]), "top3": "|".join(classes[i] for i in order[:3]),
                     "p_label": float(p[label]), "correct": order[0] == label,
                     "abstained": bool(reason), "abstain_reason": reason,
                     "ood_distance": round(distance, 6) if distance is not None else "",
                     "skin_type": case.skin_type or ""})
    write_csv(ctx.out / "differential.csv", rows, list(rows[0]) if rows else ["case_id"])
    summary = {"task": "differential", "temperature": temperature, "length_norm": ctx.ev.differential.length_norm,
               "calibration_file": str(calibration_path(_checkpoint(ctx))) if fitted else None,
               "calibrated": fitted is not None, "abstain_below": threshold,
               "ood_threshold": fitted.ood.threshold if fitted else None, "classes": classes,
               "before": cal.calibration_summary(before, labels), "after": cal.calibration_summary(after, labels),
               "coverage_accuracy": cal.coverage_accuracy(after, labels)}
    answered = [r for r in rows if not r["abstained"]]
    # what chat and the demo would do with these cases: every abstention counted, by reason
    summary["at_threshold"] = {"coverage": len(answered) / len(rows) if rows else None,
                               "accuracy": sum(r["correct"] for r in answered) / len(answered) if answered else None,
                               "abstained_by_reason": {reason: sum(r["abstain_reason"] == reason for r in rows)
                                                       for reason in sorted({r["abstain_reason"] for r in rows} - {""})}}
    summary["by_skin_type"] = _by_skin_type(cases, after, labels)
    cal.plot_reliability({"before (T = 1)": cal.reliability_bins(before, labels),
                          f"calibrated (T = {temperature:.3g})": cal.reliability_bins(after, labels)},
                         ctx.out / "reliability.png")
    cal.plot_coverage({"calibrated" if fitted else "uncalibrated (T = 1)": summary["coverage_accuracy"]},
                      ctx.out / "coverage_accuracy.png", threshold=threshold)
    write_json(ctx.out / "reliability_bins.json", {"before": cal.reliability_bins(before, labels),
                                                   "after": cal.reliability_bins(after, labels)})
    if not fitted:
        log.warning("no calibration file next to the projection checkpoint: probabilities use T = 1, and chat and "
                    "the demo abstain on every image (fit one with evaluate.py --task calibrate)")
    table = [{"": name, **{k: round(v, 4) if isinstance(v, float) else v for k, v in summary[name].items()}}
             for name in ("before", "after")]
    print(format_table(table, ["", "n", "top1", "top3", "ece", "brier"]))
    summary["seconds"] = time.perf_counter() - started
    return finish_task(ctx.out, clean_nan(summary), problems)


def _by_skin_type(cases: Sequence[Case], probs: torch.Tensor, labels: torch.Tensor) -> list[dict]:
    groups: dict[str, list[int]] = {}
    for i, case in enumerate(cases):
        if case.skin_type:
            groups.setdefault(str(case.skin_type), []).append(i)
    return [{"group": g, **cal.calibration_summary(probs[idx], labels[idx])} for g, idx in sorted(groups.items())]


VALIDATION_CASES = ConfigPath("evaluation.differential.validation_cases", "the validation split (a folder of images, "
                              "a cases CSV or a prepared folder), not the test cases")
TASKS = {"calibrate": EvalTask(calibrate, paths=(VALIDATION_CASES, CLASS_FILE)),
         "differential": EvalTask(differential, paths=CASE_PATHS)}
