r"""Evaluate SkinGPT-4: the paper's clinical protocol, consistency, response time, diagnosis metrics, ablations.

    python evaluate.py --cfg-path eval_configs/evaluate_tiny.yaml --task clinical --out output/eval/clinical
    python evaluate.py --cfg-path eval_configs/evaluate_tiny.yaml --task questionnaire --out output/eval/fig4a \
        --inputs reviewer_a.csv reviewer_b.csv

    python evaluate.py --cfg-path eval_configs/evaluate_tiny.yaml --task metrics --out output/eval/served \
        --server http://127.0.0.1:8000/v1 --export-dir exports/tiny      # the LLM served by vLLM (docs/scaling.md)

Tasks: clinical | questionnaire | consistency | metrics | response_time | ablation | calibrate | differential | image_control
(docs/evaluation.md).
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from omegaconf import OmegaConf

from skingpt4.common.config import ConfigError, load_config, raise_path_problems
from skingpt4.evaluation.cases import CaseError
from skingpt4.evaluation.questionnaire import QuestionnaireError
from skingpt4.evaluation.tasks import TASKS, EvalContext
from skingpt4.models.checkpoints import CheckpointError


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg-path", required=True, help="eval config YAML (model + evaluation sections)")
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--out", required=True, help="output folder (created; files in it are replaced)")
    parser.add_argument("--inputs", nargs="+", default=(), help="questionnaire task: filled questionnaire CSVs")
    parser.add_argument("--resume", action="store_true",
                        help="clinical: keep the case records a killed run left in --out and do the rest")
    parser.add_argument("--cases-per-class", type=int, metavar="N",
                        help="evaluate N cases of every class, drawn with evaluation.seed (= evaluation.cases_per_class)")
    served = parser.add_argument_group("a served model (clinical and metrics; docs/evaluation.md)")
    served.add_argument("--server", help="the server's OpenAI API base, e.g. http://127.0.0.1:8000/v1")
    served.add_argument("--export-dir", help="the --target vllm export the server serves (needed with --server)")
    served.add_argument("--concurrency", type=int, default=8, help="requests in flight at once (default 8)")
    served.add_argument("--timeout", type=float, default=600.0, help="seconds for each whole answer (default 600)")
    parser.add_argument("--options", nargs="+", default=(), help="override config keys: evaluation.batch_size=4 ...")
    args = parser.parse_args(argv)
    if args.cases_per_class is not None:  # the flag is the config key's short form
        args.options = [*args.options, f"evaluation.cases_per_class={args.cases_per_class}"]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = load_config(args.cfg_path, args.options)
        if args.inputs:  # the command line's questionnaire files stand in the config, where the task reads them
            OmegaConf.update(cfg, "evaluation.questionnaire.inputs", list(args.inputs), force_add=True)
        task = TASKS[args.task]
        if args.server or args.export_dir:
            from skingpt4.evaluation.served import check_served_task

            if not (args.server and args.export_dir):
                raise ConfigError("--server and --export-dir go together: the server's address and the export it serves")
            check_served_task(args.task)
            task = replace(task, uses_model=False)  # the client side comes from the export, not from model:
        ctx = EvalContext(cfg, Path(args.out), resume=args.resume)  # the evaluation section's keys and values
        raise_path_problems(task.path_problems(cfg))  # every wrong path at once, before the model loads
        if args.server:
            from skingpt4.evaluation.served import served_engine

            ctx.chat = served_engine(args.server, args.export_dir, args.concurrency, args.timeout)
        ctx.out.mkdir(parents=True, exist_ok=True)
        summary = task.run(ctx)
    except (ConfigError, CaseError, CheckpointError, QuestionnaireError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.task == "questionnaire":  # it reads rows of ratings, not cases
        print(f"{args.task}: wrote {ctx.out} ({summary['ratings']} rating(s) counted, {summary['bad_rows']} row(s) "
              "left out, see questionnaire_problems.csv)")
    else:
        print(f"{args.task}: wrote {ctx.out} ({summary.get('problems', 0)} case(s) skipped, see problems.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
