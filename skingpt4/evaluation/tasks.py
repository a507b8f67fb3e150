"""The evaluation tasks behind `evaluate.py --task ...`; each writes its files into one output folder and
returns a summary (also written as summary.json). See docs/evaluation.md for every file."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from omegaconf import DictConfig

from skingpt4.chat import ChatEngine
from skingpt4.common.config import ConfigError, ConfigPath, require_path
from skingpt4.common.images import ImageError, load_image
from skingpt4.evaluation import consistency as cons
from skingpt4.evaluation import differential_tasks
from skingpt4.evaluation import metrics as met
from skingpt4.evaluation import questionnaire as quest
from skingpt4.evaluation.cases import CaseError, load_cases
from skingpt4.evaluation.config import CASE_PATHS, CASES_WHAT, EvalTask, EvaluationConfig, evaluation_config
from skingpt4.evaluation.extract import ClassExtractor, ConceptExtractor
from skingpt4.evaluation.image_control import image_control
from skingpt4.evaluation.latency import latency_stats, plot_latency
from skingpt4.evaluation.records import case_record, record_filename
from skingpt4.evaluation.report import case_html, thumbnail_data_uri, write_report
from skingpt4.evaluation.sessions import run_sessions
from skingpt4.evaluation.tables import clean_nan, finish_task, format_table, none_if_nan, write_csv, write_json
from skingpt4.models.identity import model_identity
from skingpt4.prompting.clinical import prompt_name

log = logging.getLogger("skingpt4.evaluation")


@dataclass
class EvalContext:
    """What every task needs; the model is built on first use (the questionnaire task needs none)."""

    cfg: DictConfig
    out: Path
    ev: EvaluationConfig = field(init=False)
    extractor: ClassExtractor = field(init=False)
    chat: Optional[ChatEngine] = None  # built from cfg.model on first use when not given
    checkpoint: Optional[str] = None   # the projection checkpoint in use, when an ablation swapped it in
    resume: bool = False               # clinical: keep the records an earlier run left in the output folder

    def __post_init__(self):
        self.ev = evaluation_config(self.cfg.get("evaluation"), self.cfg.get("run"))
        self.extractor = ClassExtractor(self.ev.class_file)
        self.out = Path(self.out)

    @property
    def engine(self) -> ChatEngine:
        if self.chat is None:
            from skingpt4.models.build import build_model

            if self.cfg.get("model") is None:
                raise ConfigError("the config has no 'model' section; this task needs a model")
            with torch.random.fork_rng():  # a projection without checkpoint is random: the same one every run
                torch.manual_seed(self.ev.seed)
                model = build_model(self.cfg.model)
            self.chat = ChatEngine(model)
        return self.chat

    def fingerprint(self) -> dict:
        served = getattr(self.engine, "served_identity", None)  # a served model: the export's record (served.py)
        if served is not None:
            return served()
        model = self.engine.model
        return model_identity(model, self.checkpoint)

    def cases(self, limit: Optional[int] = None):
        source = require_path(self.ev.cases, "evaluation.cases", CASES_WHAT)
        cases, dropped = load_cases(source, self.extractor, self.ev.unplaced_dermnet_as, limit or self.ev.limit,
                                    self.ev.label_from_diagnosis, self.ev.cases_per_class, self.ev.seed)
        return cases, [{**d, "image": None} for d in dropped]

    def sessions(self, cases, prompts: Sequence[str], decoding=None, runs: int = 1, batch_size=None,
                 on_session=None):
        return run_sessions(self.engine, cases, prompts, decoding or self.ev.decoding, runs=runs,
                            batch_size=batch_size or self.ev.batch_size, seed=self.ev.seed, on_session=on_session)


# ------------------------------------------------------------------------------------------------ clinical
# What a record must share with the current run for `--resume` to keep it instead of asking again.
RESUME_KEYS = ("model_config_sha256", "projection_sha256", "checkpoint_sha256", "decoding", "seed", "chat_template")


def clinical(ctx: EvalContext, out: Optional[Path] = None) -> dict:
    """Four prompts per case in one conversation: a JSON record per case (written as soon as the case is
    done), the HTML report for the dermatologists and the blank questionnaire."""
    out = out or ctx.out
    cases, problems = ctx.cases()
    fingerprint = ctx.fingerprint()
    records = _earlier_records(out / "records", ctx, fingerprint)
    todo = [c for c in cases if c.case_id not in records]
    if records:
        log.info("resuming: %d case(s) already done, %d to go", len(cases) - len(todo), len(todo))

    def keep(session):
        record = case_record(session.case, session.answers, ctx.ev.decoding, ctx.ev.seed, fingerprint,
                             ctx.engine.template.name, session.image_sha256)
        write_json(out / "records" / record_filename(session.case.case_id), record)
        records[session.case.case_id] = record

    started = time.perf_counter()
    sessions, failed = ctx.sessions(todo, ctx.ev.prompts, on_session=keep)
    seconds = time.perf_counter() - started
    problems += failed
    done = [records[c.case_id] for c in cases if c.case_id in records]
    write_report(out / "report.html", [case_html(r, _thumbnail(r["image"])) for r in done],
                 "SkinGPT-4 clinical sessions",
                 f"projection {fingerprint['projection_sha256'][:12]}, LLM {fingerprint['llm_model']}", problems)
    quest.write_blank(out / "questionnaire_blank.csv", [r["case_id"] for r in done])
    summary = {"task": "clinical", "cases": len(cases), "completed": len(done), "resumed": len(cases) - len(todo),
               "skipped": len(problems), "seconds": seconds,
               "cases_per_minute": 60 * len(sessions) / seconds if sessions and seconds else None,
               "batch_size": ctx.ev.batch_size, "decoding": asdict(ctx.ev.decoding), "seed": ctx.ev.seed,
               **fingerprint}
    return finish_task(out, summary, problems)


def _earlier_records(folder: Path, ctx: EvalContext, fingerprint: dict) -> dict[str, dict]:
    """Records of an earlier (e.g. killed) run in this output folder: kept with `--resume` when they were
    made by the same model, checkpoint, decoding, seed, template and prompts; otherwise an error."""
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if files and not ctx.resume:
        raise ConfigError(f"'{folder}' already holds {len(files)} case record(s); pass --resume to finish that "
                          f"run, or choose another --out")
    expected = {**fingerprint, "decoding": asdict(ctx.ev.decoding), "seed": ctx.ev.seed,
                "chat_template": ctx.engine.template.name}
    records = {}
    for path in files:
        record = json.loads(path.read_text())
        differ = [k for k in RESUME_KEYS if record.get(k) != expected[k]]
        if [a["prompt"] for a in record["answers"]] != list(ctx.ev.prompts):
            differ.append("prompts")
        if differ:
            raise ConfigError(f"cannot resume: '{path}' was made with different {', '.join(differ)}; "
                              f"choose another --out")
        records[record["case_id"]] = record
    return records


def _thumbnail(image_path: str) -> Optional[str]:
    try:
        return thumbnail_data_uri(load_image(image_path))
    except (ImageError, OSError) as err:
        log.warning("no thumbnail for %s: %s", image_path, err)
        return None


# ------------------------------------------------------------------------------------------------ questionnaire
def questionnaire(ctx: EvalContext) -> dict:
    """Validate filled questionnaires (`evaluation.questionnaire.inputs`, which evaluate.py's --inputs sets) and write
    the Fig. 4a table (CSV) and chart (PNG)."""
    paths = [Path(p) for p in ctx.ev.questionnaire.inputs]
    if not paths:
        raise ConfigError("no filled questionnaires: pass --inputs FILE.csv ... or set evaluation.questionnaire.inputs")
    known = None
    if ctx.ev.questionnaire.clinical_dir:
        records = require_path(ctx.ev.questionnaire.clinical_dir, "evaluation.questionnaire.clinical_dir",
                               "the output folder of a clinical run", "dir") / "records"
        known = {json.loads(p.read_text())["case_id"] for p in records.glob("*.json")}
    ratings = quest.read_filled(paths, known)
    for problem in ratings.problems:
        log.warning("questionnaire row left out: %s", problem)
    table = quest.aggregate(ratings.rows)
    write_csv(ctx.out / "fig4a_table.csv", table, quest.table_columns())
    write_csv(ctx.out / "per_reviewer.csv", quest.per_reviewer(ratings.rows), ["reviewer", "n", "cases", "agree_total"])
    write_csv(ctx.out / "questionnaire_problems.csv", [asdict(p) for p in ratings.problems],
              ["file", "line", "reason", "row"])
    quest.plot_stacked(table, ctx.out / "fig4a.png")
    print(format_table(table, ["statement_id", "n", "strongly_agree", "agree", "neutral", "disagree",
                               "strongly_disagree", "agree_total", "paper_agree_total"]))
    summary = {"task": "questionnaire", "files": [str(p) for p in paths], "ratings": len(ratings.rows),
               "bad_rows": len(ratings.problems), "reviewers": len({r["reviewer"] for r in ratings.rows}),
               "agree_total": {row["statement_id"]: none_if_nan(row["agree_total"]) for row in table}}
    return finish_task(ctx.out, summary, [])


# ------------------------------------------------------------------------------------------------ consistency
def consistency(ctx: EvalContext, out: Optional[Path] = None) -> dict:
    """N cases x K runs with the configured decoding (and greedily, as the control)."""
    out = out or ctx.out
    settings = ctx.ev.consistency
    cases, problems = ctx.cases(settings.cases)
    modes = {"decoding": ctx.ev.decoding}
    if settings.greedy_control:
        modes["greedy_control"] = replace(ctx.ev.decoding, do_sample=False, num_beams=1)
    summary = {"task": "consistency", "runs": settings.runs, "question": settings.question, **ctx.fingerprint()}
    started = time.perf_counter()
    for mode, decoding in modes.items():
        sessions, failed = ctx.sessions(cases, [settings.question], decoding, runs=settings.runs)
        problems += [p for p in failed if p not in problems]
        answers: dict[str, list[str]] = {}
        rows = []
        for s in sorted(sessions, key=lambda s: s.run):
            text = s.answers[0]["answer"]
            answers.setdefault(s.case.case_id, []).append(text)
            rows.append({"case_id": s.case.case_id, "run": s.run, "seed": s.answers[0]["seed"],
                         "label": ctx.extractor.extract(text).label, "answer": text})
        per_case = cons.from_answers(answers, lambda text: ctx.extractor.extract(text).label)
        cons.write(per_case, out / mode)
        write_csv(out / mode / "answers.csv", rows, ["case_id", "run", "seed", "label", "answer"])
        summary[mode] = {**{k: none_if_nan(v) for k, v in cons.summarize(per_case).items()},
                         "decoding": asdict(decoding)}
        percent = lambda key: 100 * summary[mode][key] if summary[mode][key] is not None else float("nan")  # noqa: E731
        log.info("%s: consistency ratio %.2f%% over %d cases, unknown rate %.2f%% (agreeing on 'unknown' is no "
                 "diagnosis)", mode, percent("consistency_ratio"), summary[mode]["cases"], percent("unknown_rate"))
    summary["seconds"] = time.perf_counter() - started
    columns = ["mode", "cases", "runs", "consistency_ratio", "unknown_rate", "same_text_ratio"]
    print(format_table([{"mode": m, **{k: summary[m][k] for k in columns[1:]}} for m in modes], columns))
    return finish_task(out, summary, problems)


# ------------------------------------------------------------------------------------------------ metrics
def metrics(ctx: EvalContext, out: Optional[Path] = None) -> dict:
    """Accuracy, per-class P/R/F1, confusion matrix, unknown rate, by skin type; concept recall."""
    out = out or ctx.out
    cases, problems = ctx.cases()
    labelled = [c for c in cases if c.label is not None]
    with_concepts = [c for c in cases if c.concepts]
    if not labelled and not with_concepts:
        raise ConfigError(f"evaluation.cases '{ctx.ev.cases}' has no class labels and no SKINCON concepts: "
                          "the metrics task needs one of them (see docs/evaluation.md, 'Cases')")
    concept_extractor = ConceptExtractor(ctx.ev.concept_file, ctx.ev.class_file) if with_concepts else None
    if with_concepts:  # checked before any answer is generated
        unknown = sorted({c for case in with_concepts for c in case.concepts} - set(concept_extractor.concepts))
        if unknown:
            raise ConfigError(f"cases name SKINCON concepts that {concept_extractor.path} does not know: {unknown}")
    summary = {"task": "metrics", **ctx.fingerprint()}
    started = time.perf_counter()
    if labelled:
        sessions, failed = ctx.sessions(labelled, [ctx.ev.metrics.question])
        problems += failed
        summary["diagnosis"] = _diagnosis(ctx, sessions, out)
    if with_concepts:
        sessions, failed = ctx.sessions(with_concepts, [ctx.ev.metrics.concept_question])
        problems += [p for p in failed if p not in problems]
        summary["concepts"] = _concepts(concept_extractor, sessions, out)
    summary["seconds"] = time.perf_counter() - started
    return finish_task(out, summary, problems)


def _diagnosis(ctx: EvalContext, sessions, out: Path) -> dict:
    rows = []
    for s in sessions:
        found = ctx.extractor.extract(s.answers[0]["answer"])
        rows.append({"case_id": s.case.case_id, "label": s.case.label, "predicted": found.label,
                     "mentioned": "|".join(found.classes), "skin_type": s.case.skin_type or "",
                     "answer": s.answers[0]["answer"]})
    if not rows:
        write_csv(out / "predictions.csv", rows, ["case_id"])
        return {"n": 0}
    if getattr(ctx.engine, "served_identity", None) is not None:  # no prompt logprobs with prompt embeddings
        from skingpt4.evaluation.served import DIFFERENTIAL_NOT_SERVED

        side_by_side = {"served": False, "note": DIFFERENTIAL_NOT_SERVED}
        for row in rows:
            row["differential_top1"] = ""
    else:
        side_by_side = _free_text_and_differential(ctx, sessions, rows, out)
    write_csv(out / "predictions.csv", rows, ["case_id", "label", "predicted", "differential_top1", "mentioned",
                                              "skin_type", "answer"])
    y_true, y_pred = [r["label"] for r in rows], [r["predicted"] for r in rows]
    result = met.diagnosis_metrics(y_true, y_pred, ctx.extractor.classes)
    write_csv(out / "per_class.csv", result["per_class"],
              ["class", "support", "predicted", "precision", "recall", "f1"])
    met.plot_confusion(result["confusion"], out / "confusion_matrix.png")
    by_skin = met.stratified_by_scale(y_true, y_pred, [r["skin_type"] or None for r in rows], ctx.extractor.classes)
    columns = ["group", "n", "accuracy", "unknown_rate", "macro_f1"]
    for scale, table in by_skin.items():  # one table per scale: Fitzpatrick types and DDI bands never mixed
        write_csv(out / SKIN_TABLES[scale], table, columns)
    write_json(out / "metrics.json", {**clean_nan(result), "by_skin_type": clean_nan(by_skin)})
    headline = {k: none_if_nan(result[k]) for k in ("n", "accuracy", "unknown_rate", "macro_precision",
                                                    "macro_recall", "macro_f1")}
    print(format_table([headline], list(headline)))
    for scale, table in by_skin.items():
        print(f"\nby {met.SKIN_SCALES[scale]}:")
        print(format_table(table, columns))
    return {**headline, "by_skin_type": clean_nan(by_skin), "free_text_vs_differential": side_by_side}


def _free_text_and_differential(ctx: EvalContext, sessions, rows: list[dict], out: Path) -> dict:
    """The extractor's class beside the differential's top-1 for every case (rows gain `differential_top1`), and
    the cases where they differ (`disagreements.csv`), so a reviewer sees both readings of the model."""
    scored, scores, _ = differential_tasks.score_cases(ctx, [s.case for s in sessions])
    classes = differential_tasks.scorer(ctx).classes
    top1 = {case.case_id: classes[int(i)] for case, i in zip(scored, scores.argmax(dim=-1))}
    for row in rows:
        row["differential_top1"] = top1.get(row["case_id"], "")
    differ = [r for r in rows if r["differential_top1"] and r["differential_top1"] != r["predicted"]]
    columns = ["case_id", "label", "predicted", "differential_top1", "answer"]
    write_csv(out / "disagreements.csv", [{k: r[k] for k in columns} for r in differ], columns)
    n = sum(1 for r in rows if r["differential_top1"])
    return {"n": n, "extractor_accuracy": sum(r["predicted"] == r["label"] for r in rows) / len(rows),
            "differential_top1_accuracy": sum(r["differential_top1"] == r["label"] for r in rows) / n if n else None,
            "disagreements": len(differ), "agreement_rate": 1 - len(differ) / n if n else None}


SKIN_TABLES = {"fitzpatrick": "by_fitzpatrick_type.csv", "ddi": "by_ddi_skin_tone.csv", "other": "by_skin_type_other.csv"}


def _concepts(concept_extractor: ConceptExtractor, sessions, out: Path) -> dict:
    said = [concept_extractor.extract(s.answers[0]["answer"]) for s in sessions]
    write_csv(out / "concept_predictions.csv",
              [{"case_id": s.case.case_id, "true": "|".join(s.case.concepts), "mentioned": "|".join(m),
                "answer": s.answers[0]["answer"]} for s, m in zip(sessions, said)],
              ["case_id", "true", "mentioned", "answer"])
    result = met.concept_recall([s.case.concepts for s in sessions], said)
    write_csv(out / "concept_recall_per_concept.csv", result["per_concept"], ["concept", "images", "recall"])
    return {k: none_if_nan(v) for k, v in result.items() if k != "per_concept"}


# ------------------------------------------------------------------------------------------------ response time
def response_time(ctx: EvalContext) -> dict:
    """Cases one at a time (batch 1), the four prompts each; latency per answer (Fig. 4b)."""
    settings = ctx.ev.response_time
    cases, problems = ctx.cases(settings.cases + settings.warmup)
    if settings.warmup:
        ctx.sessions(cases[:settings.warmup], ctx.ev.prompts[:1], batch_size=1)
    sessions, failed = ctx.sessions(cases[settings.warmup:], ctx.ev.prompts, batch_size=1)
    problems += failed
    names = [prompt_name(p, i) for i, p in enumerate(ctx.ev.prompts)]
    rows = [{"case_id": s.case.case_id, "prompt_index": i + 1, "prompt_name": names[i], "seconds": a["seconds"],
             "new_tokens": a["new_tokens"], "prompt": a["prompt"]} for s in sessions for i, a in enumerate(s.answers)]
    write_csv(ctx.out / "latency.csv", rows,
              ["case_id", "prompt_index", "prompt_name", "seconds", "new_tokens", "prompt"])
    if not rows:
        write_json(ctx.out / "problems.json", problems)
        raise CaseError(f"no case could be timed; see {ctx.out / 'problems.json'}")
    groups = {"all answers": [r["seconds"] for r in rows]}
    for i, name in enumerate(names):  # named, not "prompt 1-4": a reader of the plot sees which question
        groups[name] = [r["seconds"] for r in rows if r["prompt_index"] == i + 1]
    groups["whole case"] = [sum(a["seconds"] for a in s.answers) for s in sessions]
    stats = {name: latency_stats(values) for name, values in groups.items() if values}
    plot_latency({k: groups[k] for k in stats}, ctx.out / "latency.png")
    print(format_table([{"group": k, **{m: round(v, 3) for m, v in s.items()}} for k, s in stats.items()],
                       ["group", "n", "median", "q1", "q3", "iqr", "mean", "min", "max"]))
    summary = {"task": "response_time", "seconds": stats, "device": str(ctx.engine.model.device),
               "warmup_cases": settings.warmup, "decoding": asdict(ctx.ev.decoding), **ctx.fingerprint()}
    return finish_task(ctx.out, summary, problems)


# ------------------------------------------------------------------------------------------------ ablation
ABLATION_COLUMNS = ["checkpoint", "accuracy", "macro_f1", "unknown_rate", "concept_micro_recall",
                    "consistency_ratio", "cases_per_minute", "projection_sha256", "path"]


def ablation(ctx: EvalContext) -> dict:
    """The same evaluation (metrics or consistency) for each checkpoint, in one comparison table."""
    checkpoints = ctx.ev.ablation.checkpoints
    if not checkpoints:
        raise ConfigError("evaluation.ablation.checkpoints is empty; map names to projection checkpoints, e.g. "
                          "{step1_only: ckpt/step1.pth, two_step: ckpt/step2.pth}")
    paths = {name: require_path(path, f"evaluation.ablation.checkpoints.{name}",
                                "a SkinGPT-4 / MiniGPT-4 projection checkpoint (.pth)", "file")
             for name, path in checkpoints.items()}  # all checked before hours of compute start
    task: Callable = {"metrics": metrics, "consistency": consistency}[ctx.ev.ablation.task]
    model, rows = ctx.engine.model, []
    from skingpt4.models.loading import load_projection

    keys = {name: f"evaluation.ablation.checkpoints.{name}" for name in paths}
    for name, path in paths.items():  # a checkpoint for another LLM size fails here, before any evaluation
        load_projection(model, str(path), keys[name])
    for name, path in paths.items():
        log.info("ablation: %s (%s)", name, path)
        report = load_projection(model, str(path), keys[name])
        ctx.checkpoint = str(path)
        log.info("%s", report)
        summary = task(ctx, ctx.out / name)
        diagnosis, concepts = summary.get("diagnosis", {}), summary.get("concepts", {})
        n = diagnosis.get("n") or concepts.get("images") or 0
        rows.append({"checkpoint": name, "path": str(path), "projection_sha256": summary["projection_sha256"],
                     "accuracy": diagnosis.get("accuracy"), "macro_f1": diagnosis.get("macro_f1"),
                     "unknown_rate": diagnosis.get("unknown_rate"),
                     "concept_micro_recall": concepts.get("micro_recall"),
                     "consistency_ratio": summary.get("decoding", {}).get("consistency_ratio"),
                     "cases_per_minute": 60 * n / summary["seconds"] if summary.get("seconds") and n else None})
    unmeasured = _not_measured(ctx.ev.ablation.task, rows)
    shown = [{k: NOT_MEASURED if k in unmeasured else v for k, v in r.items()} for r in rows]
    write_csv(ctx.out / "ablation.csv", shown, ABLATION_COLUMNS)  # the full projection SHA-256
    print(format_table([{k: ("" if v is None else round(v, 4) if isinstance(v, float) else
                             v[:12] if k == "projection_sha256" else v) for k, v in r.items()} for r in shown],
                       ABLATION_COLUMNS[:-1]))
    return finish_task(ctx.out, {"task": "ablation", "evaluation": ctx.ev.ablation.task, "rows": rows,
                             "not_measured": sorted(unmeasured)}, [])


NOT_MEASURED = "not measured"


def _not_measured(task: str, rows: list[dict]) -> set[str]:
    """The columns the ablation's task does not measure (left empty, they would read as missing results)."""
    if task == "consistency":
        return {"accuracy", "macro_f1", "unknown_rate", "concept_micro_recall"}
    unmeasured = {"consistency_ratio"}
    if all(r["concept_micro_recall"] is None for r in rows):  # no case carries SKINCON concepts
        unmeasured.add("concept_micro_recall")
    if all(r["accuracy"] is None for r in rows):  # no case carries a class label
        unmeasured |= {"accuracy", "macro_f1", "unknown_rate"}
    return unmeasured


ABLATION_CHECKPOINTS = ConfigPath("evaluation.ablation.checkpoints", "a SkinGPT-4 / MiniGPT-4 projection checkpoint "
                                  "(.pth)", "checkpoint", each=True)
QUESTIONNAIRE_PATHS = (
    ConfigPath("evaluation.questionnaire.inputs", "a filled questionnaire CSV (or pass --inputs)", "file", each=True),
    ConfigPath("evaluation.questionnaire.clinical_dir", "the output folder of a clinical run", "dir", optional=True))
TASKS = {"clinical": EvalTask(clinical, paths=CASE_PATHS),
         "questionnaire": EvalTask(questionnaire, uses_model=False, paths=QUESTIONNAIRE_PATHS),
         "consistency": EvalTask(consistency, paths=CASE_PATHS),
         "metrics": EvalTask(metrics, paths=CASE_PATHS),
         "response_time": EvalTask(response_time, paths=CASE_PATHS),
         "ablation": EvalTask(ablation, paths=CASE_PATHS + (ABLATION_CHECKPOINTS,)),
         "image_control": EvalTask(image_control, paths=CASE_PATHS),
         **differential_tasks.TASKS}
