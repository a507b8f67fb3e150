"""python -m skingpt4.ablations: the ablation table (skingpt4/ablations/__init__.py, docs/evaluation.md)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

TINY = {"step1": Path("train_configs/main_job_step1.yaml"), "step2": Path("train_configs/main_job_step2.yaml"),
        "eval": Path("eval_configs/main_job.yaml")}
# The ablation world and recipe (docs/evaluation.md, "Ablations"): the main job's world and configs, except that
# step 2 is scarce -- 3 Dermnet training images per class (the main job's world: 24), the SKINCON concepts of step 1
# as plentiful as there -- and step 2 fine-tunes at a tenth of the main job's learning rate. With the main job's
# 24 images per class and learning rate, step 2 alone reaches what the frozen features carry about the class within
# a few dozen steps from any start, so step 1's head start cannot show (both steps 54.2% ± 1.0 vs step 2 only
# 58.0% ± 2.4 on 3 seeds); in this setting it does.
ABLATION_DATA = Path("data/synthetic_ablations")
ABLATION_PER_CLASS = 3
ABLATION_STEP2_OPTIONS = ("run.init_lr=1e-3", "run.min_lr=1e-4")
EXAMPLES = """
examples:
  python -m skingpt4.ablations --out output/ablations                  # the tiny world, default arms, 3 seeds
  python -m skingpt4.ablations --arms step2_only both_steps --seeds 0   # a subset
  # full size on GPUs (one arm-stage at a time, each training stage under torchrun):
  python -m skingpt4.ablations --out output/ablations_13b --launcher "torchrun --nproc-per-node 8" \\
    --step1-cfg train_configs/step1.yaml --step2-cfg train_configs/step2.yaml \\
    --eval-cfg eval_configs/skingpt4_llama2_13bchat.yaml --data data/prepared_root \\
    --cases data/cases/dermnet_test.csv --val-cases data/cases/dermnet_val.csv --concept-cases none \\
    --train-options model.llm_model=/weights/Llama-2-13b-chat-hf --eval-options model.llm_model=/weights/Llama-2-13b-chat-hf
exit status: 0 every check holds, 1 a check failed (see ablations.md), 2 bad input, 130 interrupted
"""


def parse_args(argv=None) -> argparse.Namespace:
    from skingpt4.ablations.arms import ARMS, DEFAULT_ARMS

    parser = argparse.ArgumentParser(prog="python -m skingpt4.ablations", description=__import__(
        "skingpt4.ablations").ablations.__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("output/ablations"), help="output folder (resumed when it exists)")
    parser.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), choices=list(ARMS), metavar="ARM",
                        help=f"arms to run (default all: {' '.join(DEFAULT_ARMS)})")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds (default 0 1 2)")
    parser.add_argument("--data", type=Path, default=None,
                        help=f"synthetic data folder (default $SKINGPT4_ABLATION_DATA or {ABLATION_DATA}; made there "
                             "with --per-class when it does not hold that generation): the tiny configs read it, the "
                             "default case lists and the pixel baselines come from it")
    parser.add_argument("--per-class", type=int, default=ABLATION_PER_CLASS,
                        help=f"tiny world: Dermnet training images per class (default {ABLATION_PER_CLASS}, scarce step-2 "
                             "labels; the main job's world has 24)")
    parser.add_argument("--assets", type=Path, default=None, help="tiny assets (default $SKINGPT4_TINY_ASSETS or tiny_assets)")
    parser.add_argument("--step1-cfg", type=Path, default=None, help=f"step-1 training config (default {TINY['step1']})")
    parser.add_argument("--step2-cfg", type=Path, default=None, help=f"step-2 training config (default {TINY['step2']})")
    parser.add_argument("--eval-cfg", type=Path, default=None, help=f"evaluation config (default {TINY['eval']})")
    parser.add_argument("--train-options", nargs="+", default=[], help="overrides for both training configs")
    parser.add_argument("--step2-options", nargs="+", default=[],
                        help="overrides for the step-2 stages only (e.g. a shorter step-2 budget: run.max_epoch=1); "
                             f"with the tiny configs they follow the ablation recipe's {' '.join(ABLATION_STEP2_OPTIONS)}")
    parser.add_argument("--eval-options", nargs="+", default=[], help="overrides for the evaluation config")
    parser.add_argument("--cases", default=None, help="held-out cases (default <data>/cases/dermnet_test.csv)")
    parser.add_argument("--val-cases", default=None,
                        help="validation split for the temperature (default <data>/cases/dermnet_val.csv; none: skip)")
    parser.add_argument("--concept-cases", default=None,
                        help="SKINCON-style cases for concept recall (default <data>/cases/skincon_test.csv; none: skip)")
    parser.add_argument("--launcher", default=None,
                        help="run each training stage as this command + train.py (e.g. 'torchrun --nproc-per-node 8'); "
                             "default: in this process")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def step2_recipe(tiny: bool, options) -> tuple[str, ...]:
    """The step-2 overrides: with the tiny configs the ablation recipe's, then the user's (a later override wins);
    at full size only the user's (the paper's configs carry their own learning rates)."""
    return (*(ABLATION_STEP2_OPTIONS if tiny else ()), *options)


def _case_path(value, default: Path):
    if value is None:
        return default
    return None if str(value).lower() == "none" else Path(value)


def main(argv=None) -> int:
    # The stages read the data and asset folders from the environment (the tiny configs' ${oc.env:...}); an
    # in-process caller (a test, a notebook) gets its own environment back afterwards.
    saved = {key: os.environ.get(key) for key in ("SKINGPT4_SYNTHETIC_DATA", "SKINGPT4_TINY_ASSETS")}
    try:
        return _main(argv)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _main(argv) -> int:
    args = parse_args(argv)
    tiny = args.step1_cfg is None and args.step2_cfg is None and args.eval_cfg is None
    if args.per_class < 1:
        print(f"error: --per-class must be at least 1 (got {args.per_class})", file=sys.stderr)
        return 2
    data = args.data or Path(os.environ.get("SKINGPT4_ABLATION_DATA", str(ABLATION_DATA)))
    assets = args.assets or Path(os.environ.get("SKINGPT4_TINY_ASSETS", "tiny_assets"))
    os.environ["SKINGPT4_SYNTHETIC_DATA"], os.environ["SKINGPT4_TINY_ASSETS"] = str(data), str(assets)
    step1, step2, eval_cfg = args.step1_cfg or TINY["step1"], args.step2_cfg or TINY["step2"], args.eval_cfg or TINY["eval"]
    for path in (step1, step2, eval_cfg):
        if not path.is_file():
            print(f"error: config '{path}' not found", file=sys.stderr)
            return 2
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    if tiny:  # the tiny world's assets and data (both cached; what scripts/main_job.sh builds)
        import torch

        from data_prep.make_synthetic import is_current, make_synthetic
        from skingpt4.tiny.assets import build_tiny_assets

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        build_tiny_assets(assets, progress=not args.no_progress, log=print)
        import inspect

        # make_synthetic's defaults (what scripts/main_job.sh makes), without statistics, with --per-class
        arguments = {name: p.default for name, p in inspect.signature(make_synthetic).parameters.items()
                     if p.default is not inspect.Parameter.empty and name not in ("overwrite", "log")}
        arguments.update(stats=False, per_class=args.per_class)
        if not is_current(data, arguments):
            make_synthetic(data, **arguments, overwrite=True, log=print)
    cases = _case_path(args.cases, data / "cases" / "dermnet_test.csv")
    val_cases = _case_path(args.val_cases, data / "cases" / "dermnet_val.csv")
    concept_cases = _case_path(args.concept_cases, data / "cases" / "skincon_test.csv")
    for what, path in (("--cases", cases), ("--val-cases", val_cases), ("--concept-cases", concept_cases)):
        if (path is None and what == "--cases") or (path is not None and not path.exists()):
            print(f"error: {what} '{path}' not found (make it, or pass none where allowed)", file=sys.stderr)
            return 2

    from skingpt4.ablations import Ablation, Evaluator, Plan
    from skingpt4.ablations.table import markdown
    from skingpt4.common.config import ConfigError

    step2_options = step2_recipe(tiny, args.step2_options)
    ablation = Ablation(args.out, Plan(step1, step2, tuple(args.train_options), tuple(step2_options), args.launcher),
                        Evaluator(eval_cfg, cases, val_cases, concept_cases, args.eval_options), args.arms, args.seeds,
                        data=data, progress=not args.no_progress)
    try:
        table = ablation.run()
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; finished arm-seeds are kept in {args.out / 'results'} (run the command again to resume)",
              file=sys.stderr)
        return 130
    print(markdown(table))
    print(f"kept {table['kept']} finished arm-seed(s), computed {table['computed']}; table in "
          f"{args.out / 'ablations.md'} (+ .json, .png)")
    return 0 if all(c["ok"] for c in table["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
