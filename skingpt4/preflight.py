"""Every file and folder a config names, checked at once before anything is loaded.

Checking paths one at a time as each part is built means a config with several wrong paths needs several
tries, each fix revealing the next (and the model may take minutes to load before the dataset path is found
wrong). `check_config_paths` collects every missing, empty or wrong-kind path of the sections an entry point
uses and raises one `ConfigError` that lists them all, in one line. The parts still check their own paths
when they are built (a file can vanish in between); this is the early, complete report.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from skingpt4.common.config import ConfigError, require_path, to_plain

PURPOSES = ("train", "chat", "evaluate")
# evaluate.py tasks that read cases (and therefore the model): all but the questionnaire and the calibration
# (which reads the validation split)
CASE_TASKS = ("clinical", "consistency", "metrics", "response_time", "ablation", "differential")
MODEL_TASKS = CASE_TASKS + ("calibrate",)
CKPT_WHAT = {
    "train": "the checkpoint to start from (for step 2: the step-1 checkpoint_last.pth)",
    "chat": "a SkinGPT-4 / MiniGPT-4 checkpoint (.pth) with the projection",
    "evaluate": "a SkinGPT-4 / MiniGPT-4 checkpoint (.pth) with the projection",
}
LLM_WHAT = ("the local directory of a Llama-family LLM in transformers format (e.g. Llama-2-13b-chat-hf)")


def check_config_paths(cfg: Any, purpose: str, task: Optional[str] = None, inputs: Iterable[str] = ()) -> None:
    """Raise one ConfigError naming every bad path of the sections `purpose` uses:
    train: model, datasets, run.resume_ckpt_path; chat: model; evaluate: model and the `evaluation` paths
    of `task` (questionnaire: its input files, no model). `inputs`: the questionnaire files given on the
    command line."""
    problems = config_path_problems(cfg, purpose, task, inputs)
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        listed = "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
        raise ConfigError(f"{len(problems)} paths in the config need fixing: {listed}")


def config_path_problems(cfg: Any, purpose: str, task: Optional[str] = None, inputs: Iterable[str] = ()) -> list[str]:
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    problems: list[str] = []
    uses_model = purpose != "evaluate" or task in MODEL_TASKS
    if uses_model and cfg.get("model") is not None:
        _model_paths(cfg.model, CKPT_WHAT[purpose], problems)
    if purpose == "train":
        _dataset_paths(cfg.get("datasets"), problems)
        run = cfg.get("run") or {}
        if _set(run.get("prompt_path")):
            _prompt_file(run.get("prompt_path"), "run.prompt_path", problems)
        if run.get("resume_ckpt_path"):
            _checkpoint(run.get("resume_ckpt_path"), "run.resume_ckpt_path",
                        "the checkpoint_last.pth of the run to continue", problems)
    if purpose == "evaluate":
        _evaluation_paths(cfg.get("evaluation") or {}, task, list(inputs), problems)
    return problems


def _collect(problems: list[str], check: Callable[[], Any]) -> Any:
    try:
        return check()
    except ConfigError as err:
        problems.append(str(err))
        return None


def _set(value: Any) -> bool:
    return value not in (None, "", "null")


def _checkpoint(value: Any, key: str, what: str, problems: list[str]) -> None:
    path = _collect(problems, lambda: require_path(value, key, what, "file"))
    if path is not None and path.stat().st_size == 0:
        problems.append(f"config key '{key}': checkpoint '{value}' is empty (0 bytes); was it written completely?")


def _model_paths(model_section: Any, ckpt_what: str, problems: list[str]) -> None:
    from skingpt4.models.build import model_config

    m = model_config(model_section)  # the variant's YAML supplies the tiny model's paths
    if _set(m.blip2_hf_dir):
        _collect(problems, lambda: require_path(m.blip2_hf_dir, "model.blip2_hf_dir",
                                                "a transformers BLIP-2 snapshot directory", "dir"))
    else:
        _checkpoint(m.q_former_model, "model.q_former_model", "blip2_pretrained_flant5xxl.pth (the BLIP-2 "
                    "checkpoint with the Q-Former), or set model.blip2_hf_dir", problems)
        if _set(m.vit_model):
            _checkpoint(m.vit_model, "model.vit_model", "eva_vit_g.pth (EVA-ViT-g weights)", problems)
    _collect(problems, lambda: require_path(m.llm_model, "model.llm_model", LLM_WHAT, "dir"))
    if _set(m.ckpt):
        _checkpoint(m.ckpt, "model.ckpt", ckpt_what, problems)


def _prompt_file(value: Any, key: str, problems: list[str]) -> None:
    from skingpt4.prompting.prompt_files import PROJECT_ROOT

    prompt = Path(str(value))
    if not prompt.is_absolute() and not prompt.exists():
        prompt = PROJECT_ROOT / prompt  # as the prompt lines are read
    if not prompt.is_file():
        problems.append(f"config key '{key}': no such file '{value}'; put a text file with one prompt per line "
                        "(see prompts/) there")


def _dataset_paths(datasets: Any, problems: list[str]) -> None:
    from skingpt4.common import registry
    from skingpt4.datasets.webdataset_source import resolve_shards

    for name, block in (datasets or {}).items():
        block = block or {}
        builder = block.get("builder") or name
        if builder == "webdataset":
            _collect(problems, lambda: resolve_shards(to_plain(block.get("shards")), f"datasets.{name}.shards"))
        elif builder in registry.datasets:  # an unknown builder is reported when the datasets are built
            what = getattr(registry.datasets.get(builder), "what", "a prepared folder with filter_cap.json and image/")
            _collect(problems, lambda: require_path(block.get("storage"), f"datasets.{name}.storage", what, "dir"))


def _evaluation_paths(ev: Any, task: Optional[str], inputs: list[str], problems: list[str]) -> None:
    if task in CASE_TASKS:
        _collect(problems, lambda: require_path(ev.get("cases"), "evaluation.cases", "a folder of images, a cases "
                                                "CSV or a prepared folder with filter_cap.json"))
        for key, what in (("class_file", "a class list like skingpt4/evaluation/classes.json"),
                          ("concept_file", "a concept list like skingpt4/evaluation/concepts.json")):
            if _set(ev.get(key)):
                _collect(problems, lambda: require_path(ev.get(key), f"evaluation.{key}", what, "file"))
    if task == "calibrate":
        _collect(problems, lambda: require_path((ev.get("differential") or {}).get("validation_cases"),
                                                "evaluation.differential.validation_cases", "the validation split "
                                                "(a folder of images, a cases CSV or a prepared folder), not the "
                                                "test cases"))
    if task == "ablation":
        for name, path in ((ev.get("ablation") or {}).get("checkpoints") or {}).items():
            _checkpoint(path, f"evaluation.ablation.checkpoints.{name}",
                        "a SkinGPT-4 / MiniGPT-4 projection checkpoint (.pth)", problems)
    if task == "questionnaire":
        settings = ev.get("questionnaire") or {}
        files = [(f"--inputs {p}", p) for p in inputs] or [
            (f"evaluation.questionnaire.inputs[{i}]", p) for i, p in enumerate(settings.get("inputs") or [])]
        for key, path in files:
            if not Path(str(path)).is_file():
                problems.append(f"questionnaire file not found: '{path}' ({key})")
        if _set(settings.get("clinical_dir")):
            _collect(problems, lambda: require_path(settings.get("clinical_dir"), "evaluation.questionnaire."
                                                    "clinical_dir", "the output folder of a clinical run", "dir"))
