"""The `evaluation:` section of an eval config (validated: a typo is an error listing the valid keys).
Every key is documented in docs/evaluation.md."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from omegaconf import OmegaConf

from skingpt4.chat.decoding import DecodingConfig
from skingpt4.common.config import ConfigError, ConfigPath, apply_schema, config_path_problems
from skingpt4.prompting.clinical import CLINICAL_PROMPTS, CONCEPT_PROMPT


@dataclass(frozen=True)
class EvalTask:
    """An `evaluate.py --task`: its function (ctx -> summary), whether it reads the model, and the config paths it
    reads (`path_problems`: exactly these, and the model's when it reads the model, before the model loads)."""

    run: Callable
    uses_model: bool = True
    paths: tuple[ConfigPath, ...] = ()

    def path_problems(self, cfg) -> list[str]:
        from skingpt4.chat.build import CHAT_CKPT_WHAT
        from skingpt4.models.build import model_path_problems

        model = model_path_problems(cfg.get("model"), CHAT_CKPT_WHAT) if self.uses_model else []
        return model + config_path_problems(cfg, self.paths)


CASES_WHAT = "a folder of images, a cases CSV or a prepared folder with filter_cap.json"
CLASS_FILE = ConfigPath("evaluation.class_file", "a class table like skingpt4/common/classes.json", "file",
                        optional=True)
# What every task that answers about cases reads.
CASE_PATHS = (ConfigPath("evaluation.cases", CASES_WHAT), CLASS_FILE,
              ConfigPath("evaluation.concept_file", "a concept table like skingpt4/common/concepts.json", "file",
                         optional=True))


@dataclass
class ConsistencySettings:
    runs: int = 10                       # independent diagnoses per case (paper: 10)
    cases: Optional[int] = None          # use the first N cases (paper: 45); null = all
    question: str = CLINICAL_PROMPTS[0]  # the diagnosis is extracted from the answer to this question
    greedy_control: bool = True          # also run the same cases greedily (must give 100%)


@dataclass
class MetricsSettings:
    question: str = CLINICAL_PROMPTS[0]  # diagnosis question (one-turn conversation per case)
    concept_question: str = CONCEPT_PROMPT  # asked of cases that carry SKINCON concepts (concept recall)


@dataclass
class DifferentialSettings:
    question: str = CLINICAL_PROMPTS[0]  # the diagnosis question the class answers follow
    abstain_below: float = 0.5           # top probability below this: "unsure, see a dermatologist"
    length_norm: str = "none"            # none: the answer's log-likelihood; mean: per answer token
    validation_cases: Optional[str] = None  # calibrate: the validation split (never the test cases)


@dataclass
class ResponseTimeSettings:
    cases: int = 20      # paper: n = 20
    warmup: int = 1      # cases run first and not timed (CUDA kernels, caches)


@dataclass
class AblationSettings:
    checkpoints: Dict[str, str] = field(default_factory=dict)  # name -> projection checkpoint (.pth)
    task: str = "metrics"                                      # metrics | consistency


@dataclass
class QuestionnaireSettings:
    inputs: List[str] = field(default_factory=list)  # filled questionnaire CSVs (or --inputs on the command line)
    clinical_dir: Optional[str] = None               # a clinical run's output: ratings of other case ids are bad rows


@dataclass
class EvaluationConfig:
    cases: Optional[str] = None              # folder of images, cases CSV, or prepared folder with filter_cap.json
    limit: Optional[int] = None              # N cases in all, drawn stratified by class with `seed` (cases.py)
    cases_per_class: Optional[int] = None    # N cases of every class, drawn with `seed` (paper: 10; consistency: 3)
    unplaced_dermnet_as: Optional[str] = "Others"  # class of Dermnet folders the paper does not place; null: drop
    label_from_diagnosis: bool = False       # unlabelled cases with a `diagnosis` get the class named in it
    class_file: Optional[str] = None         # default: skingpt4/common/classes.json (the one class table)
    concept_file: Optional[str] = None       # default: skingpt4/common/concepts.json (the one concept table)
    prompts: List[str] = field(default_factory=lambda: list(CLINICAL_PROMPTS))
    batch_size: int = 8                      # cases answered together by ChatEngine.ask_batch
    seed: int = 0                            # base seed; each batched call gets a seed derived from it
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    consistency: ConsistencySettings = field(default_factory=ConsistencySettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    response_time: ResponseTimeSettings = field(default_factory=ResponseTimeSettings)
    differential: DifferentialSettings = field(default_factory=DifferentialSettings)
    ablation: AblationSettings = field(default_factory=AblationSettings)
    questionnaire: QuestionnaireSettings = field(default_factory=QuestionnaireSettings)


def evaluation_config(section, run_section=None) -> EvaluationConfig:
    """Validate `cfg.evaluation` and return it as a plain dataclass (decoding settings checked too).

    An eval config written for the chat/demo (`run.decoding`) can be evaluated as is: where `evaluation` does
    not set `decoding`, the `run` section's is used (its `decoding.seed` excepted: evaluation seeds come from
    `evaluation.seed`). The chat template is the model's (`model.template`, named by its variant)."""
    defaults = {}
    if run_section is not None and run_section.get("decoding") is not None:
        defaults["decoding"] = {k: v for k, v in run_section.get("decoding").items() if k != "seed"}
    merged = apply_schema(section, EvaluationConfig, "evaluation", defaults=defaults)
    try:
        cfg: EvaluationConfig = OmegaConf.to_object(merged)  # runs DecodingConfig's own checks
    except ValueError as err:
        raise ConfigError(f"evaluation.decoding: {err}") from None
    if cfg.decoding.seed is not None:
        raise ConfigError("evaluation.decoding.seed must stay unset: set evaluation.seed, from which every "
                          "batched call's seed is derived (and recorded)")
    for key, value in (("batch_size", cfg.batch_size), ("consistency.runs", cfg.consistency.runs),
                       ("response_time.cases", cfg.response_time.cases)):
        if value < 1:
            raise ConfigError(f"evaluation.{key} must be >= 1, got {value}")
    if not 0 <= cfg.differential.abstain_below <= 1:
        raise ConfigError(f"evaluation.differential.abstain_below must be in [0, 1], got {cfg.differential.abstain_below}")
    if not cfg.prompts:
        raise ConfigError("evaluation.prompts is empty; give the clinical questions (docs/evaluation.md)")
    if cfg.ablation.task not in ("metrics", "consistency"):
        raise ConfigError(f"evaluation.ablation.task={cfg.ablation.task}: choose metrics or consistency")
    return cfg
