"""Training: the recipe (setup -> train -> cleanup), the runner loop, LR schedules (registered by name), the AdamW
builder, the data plan, the frozen-feature cache and metrics. See docs/training.md."""
from skingpt4.runners.config import RunConfig, build_run_config
from skingpt4.runners.data import Source, as_sources
from skingpt4.runners.distributed import DistInfo, init_distributed
from skingpt4.runners.runner import Runner, TrainResult

__all__ = ["RunConfig", "build_run_config", "Source", "as_sources", "DistInfo", "init_distributed", "Runner",
           "TrainResult"]
