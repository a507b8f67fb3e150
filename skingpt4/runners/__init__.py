"""Training machinery: the runner (registered `runner_base`), LR schedules (registered by name), the AdamW
builder, atomic checkpoints, the data plan and metrics. Importing it registers the runner and schedules."""
from skingpt4.runners import lr_schedules, runner  # noqa: F401  (registration)
from skingpt4.runners.config import RunConfig, build_run_config
from skingpt4.runners.data import Source, as_sources
from skingpt4.runners.distributed import DistInfo, init_distributed
from skingpt4.runners.runner import Runner, TrainResult

__all__ = ["RunConfig", "build_run_config", "Source", "as_sources", "DistInfo", "init_distributed", "Runner",
           "TrainResult"]
