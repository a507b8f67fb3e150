"""Learning-rate schedules, registered by name so a run config can say `lr_sched: linear_warmup_cosine_lr`.

Each schedule is a pure function of the global optimisation step (0-based), so resuming at step N gives
exactly the LR an uninterrupted run had there. They are applied through torch's `LambdaLR` (the factor is
lr(step) / init_lr), which keeps the scheduler state in a format torch already saves and restores.

The formulas are MiniGPT-4's (the paper does not state its schedule; docs/training.md):
  warmup (both): lr = warmup_lr + (init_lr - warmup_lr) * step / warmup_steps   for step < warmup_steps
  cosine:        lr = min_lr + (init_lr - min_lr) * (1 + cos(pi * step / total_steps)) / 2
                 (the cosine runs over the whole run counted from step 0, as in MiniGPT-4; with 5000 warmup
                 steps out of 100000 the LR at the end of warmup is 0.99994 * init_lr)
  step:          lr = max(min_lr, init_lr * lr_decay_rate ** epoch); warmup only inside the first epoch
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from skingpt4.common import registry


@dataclass(frozen=True)
class ScheduleSpec:
    init_lr: float
    min_lr: float
    warmup_lr: float
    warmup_steps: int
    iters_per_epoch: int
    max_epoch: int
    lr_decay_rate: float = 0.9

    @property
    def total_steps(self) -> int:
        return self.iters_per_epoch * self.max_epoch


def _warmup(spec: ScheduleSpec, step: int) -> float:
    return spec.warmup_lr + (spec.init_lr - spec.warmup_lr) * step / max(spec.warmup_steps, 1)


@registry.lr_schedulers.register("linear_warmup_cosine_lr")
def linear_warmup_cosine_lr(spec: ScheduleSpec, step: int) -> float:
    if step < spec.warmup_steps:
        return _warmup(spec, step)
    progress = min(step, spec.total_steps) / max(spec.total_steps, 1)
    return spec.min_lr + (spec.init_lr - spec.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


@registry.lr_schedulers.register("linear_warmup_step_lr")
def linear_warmup_step_lr(spec: ScheduleSpec, step: int) -> float:
    epoch = step // max(spec.iters_per_epoch, 1)
    if epoch == 0 and step < spec.warmup_steps:
        return _warmup(spec, step)
    return max(spec.min_lr, spec.init_lr * spec.lr_decay_rate**epoch)


def build_lr_scheduler(name: str, optimizer: torch.optim.Optimizer,
                       spec: ScheduleSpec) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR whose `base_lr` is `spec.init_lr` for every param group, so group lr = schedule(step)."""
    schedule = registry.lr_schedulers.get(name)
    for group in optimizer.param_groups:
        group["lr"] = spec.init_lr
        group.setdefault("initial_lr", spec.init_lr)
    if spec.init_lr <= 0:
        raise ValueError(f"init_lr must be > 0 for a LambdaLR factor, got {spec.init_lr}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule(spec, step) / spec.init_lr)
