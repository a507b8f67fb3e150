"""Every file and folder a config names, checked at once before anything is loaded.

Checking paths one at a time as each part is built means a config with several wrong paths needs several
tries, each fix revealing the next (and the model may take minutes to load before the dataset path is found
wrong). `check_config_paths` collects every missing, empty or wrong-kind path that an entry point will read and
raises one `ConfigError` that lists them all, in one line. It keeps no list of its own: each part declares the
paths it reads (`ConfigPath`, skingpt4/common/config.py) next to its code -- the model (`models.build.model_paths`),
each dataset builder (`paths`), the runner (`runners.config.RUN_PATHS`) and each evaluation task
(`evaluation.tasks.TASKS`). The parts still check their own paths when they are built (a file can vanish in
between); this is the early, complete report.
"""
from __future__ import annotations

from typing import Any, Optional

from skingpt4.common.config import ConfigError, config_path_problems

PURPOSES = ("train", "chat", "evaluate")
CKPT_WHAT = {
    "train": "the checkpoint to start from (for step 2: the step-1 checkpoint_last.pth)",
    "chat": "a SkinGPT-4 / MiniGPT-4 checkpoint (.pth) with the projection",
    "evaluate": "a SkinGPT-4 / MiniGPT-4 checkpoint (.pth) with the projection",
}


def check_config_paths(cfg: Any, purpose: str, task: Optional[str] = None) -> None:
    """Raise one ConfigError naming every bad path that `purpose` reads: train: model, datasets, run; chat: model;
    evaluate: the paths the evaluation `task` declares (and the model's, when the task reads the model)."""
    problems = path_problems(cfg, purpose, task)
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        listed = "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
        raise ConfigError(f"{len(problems)} paths in the config need fixing: {listed}")


def path_problems(cfg: Any, purpose: str, task: Optional[str] = None) -> list[str]:
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    evaluation = _evaluation_task(task) if purpose == "evaluate" else None
    problems: list[str] = []
    if (evaluation is None or evaluation.uses_model) and cfg.get("model") is not None:
        problems += _model_problems(cfg.model, CKPT_WHAT[purpose])
    if purpose == "train":
        from skingpt4.runners.config import RUN_PATHS

        problems += _dataset_problems(cfg.get("datasets"))
        problems += config_path_problems(cfg, RUN_PATHS)
    if evaluation is not None:
        problems += config_path_problems(cfg, evaluation.paths)
    return problems


def _evaluation_task(name: Optional[str]):
    from skingpt4.evaluation.tasks import TASKS

    if name not in TASKS:
        raise ConfigError(f"unknown evaluation task '{name}'; valid tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def _model_problems(model_section: Any, ckpt_what: str) -> list[str]:
    from skingpt4.models.build import model_config, model_paths

    resolved = model_config(model_section)  # the variant's YAML supplies the tiny model's paths
    return config_path_problems(resolved, model_paths(resolved, ckpt_what), prefix="model.")


def _dataset_problems(datasets: Any) -> list[str]:
    from skingpt4.common import registry

    problems = []
    for name, block in (datasets or {}).items():
        block = block or {}
        builder = block.get("builder") or name
        if builder in registry.datasets:  # an unknown builder is reported when the datasets are built
            problems += config_path_problems(block, registry.datasets.get(builder)().paths, prefix=f"datasets.{name}.")
    return problems
