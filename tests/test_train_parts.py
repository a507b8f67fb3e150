"""Runner parts on their own: LR schedules against torch's schedulers, AdamW parameter groups, atomic
checkpoints, the data plan (reproducible, resumable, rank-sharded, ratio-mixed) and run-config checks."""
import math
import os

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import Dataset, IterableDataset

from skingpt4.common import registry
from skingpt4.common.config import ConfigError
from skingpt4.runners import Source, build_run_config
from skingpt4.models.checkpoints import save_checkpoint
from skingpt4.models.checkpoints import read_checkpoint as load_checkpoint
from skingpt4.runners.data import BatchPlan, PlannedItems, as_sources
from skingpt4.runners.lr_schedules import ScheduleSpec, build_lr_scheduler
from skingpt4.runners.optim import build_optimizer

SPEC = ScheduleSpec(init_lr=1e-4, min_lr=8e-5, warmup_lr=1e-6, warmup_steps=50, iters_per_epoch=100, max_epoch=4,
                    lr_decay_rate=0.5)


def record_lrs(optimizer, scheduler, steps):
    values = []
    for _ in range(steps):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def lrs(name, spec, steps):
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(2))], lr=spec.init_lr)
    return record_lrs(optimizer, build_lr_scheduler(name, optimizer, spec), steps)


def torch_reference(scheduler_cls, steps, **kwargs):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=SPEC.init_lr)
    return record_lrs(optimizer, scheduler_cls(optimizer, **kwargs), steps)


def test_cosine_schedule_matches_torch_linear_warmup_and_cosine_annealing():
    ours = lrs("linear_warmup_cosine_lr", SPEC, SPEC.total_steps + 5)
    warmup = torch_reference(torch.optim.lr_scheduler.LinearLR, SPEC.warmup_steps + 1,
                             start_factor=SPEC.warmup_lr / SPEC.init_lr, end_factor=1.0, total_iters=SPEC.warmup_steps)
    cosine = torch_reference(torch.optim.lr_scheduler.CosineAnnealingLR, SPEC.total_steps + 1,
                             T_max=SPEC.total_steps, eta_min=SPEC.min_lr)
    assert ours[: SPEC.warmup_steps] == pytest.approx(warmup[: SPEC.warmup_steps], rel=1e-9)
    assert ours[SPEC.warmup_steps : SPEC.total_steps + 1] == pytest.approx(cosine[SPEC.warmup_steps:], rel=1e-6)
    assert ours[-1] == pytest.approx(SPEC.min_lr)  # stays at min_lr past the end


def test_step_schedule_matches_torch_step_lr_after_warmup():
    ours = lrs("linear_warmup_step_lr", SPEC, SPEC.total_steps)
    step = torch_reference(torch.optim.lr_scheduler.StepLR, SPEC.total_steps, step_size=SPEC.iters_per_epoch,
                           gamma=SPEC.lr_decay_rate)
    expected = [max(SPEC.min_lr, v) for v in step]
    assert ours[0] == SPEC.warmup_lr and ours[25] == pytest.approx(SPEC.warmup_lr + (1e-4 - 1e-6) * 25 / 50)
    assert ours[SPEC.warmup_steps:] == pytest.approx(expected[SPEC.warmup_steps:], rel=1e-9)
    assert ours[150] == pytest.approx(8e-5)  # 1e-4 * 0.5 = 5e-5 is clipped to min_lr


def test_unknown_schedule_lists_the_registered_ones():
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(2))])
    with pytest.raises(KeyError, match="unknown LR schedule 'cosine'.*linear_warmup_cosine_lr, linear_warmup_step_lr"):
        build_lr_scheduler("cosine", optimizer, SPEC)


def test_no_weight_decay_on_bias_norm_and_1d_parameters():
    model = nn.ModuleDict({"proj": nn.Linear(4, 3), "norm": nn.LayerNorm(3), "ln_vision": nn.LayerNorm(3),
                           "frozen": nn.Linear(3, 3)})
    model["frozen"].requires_grad_(False)
    model.register_parameter("scale", nn.Parameter(torch.ones(3)))
    optimizer = build_optimizer(model, 1e-3, 0.05, (0.9, 0.999))
    by_id = {id(p): n for n, p in model.named_parameters()}
    groups = {g["weight_decay"]: sorted(by_id[id(p)] for p in g["params"]) for g in optimizer.param_groups}
    assert groups == {0.05: ["proj.weight"],
                      0.0: ["ln_vision.bias", "ln_vision.weight", "norm.bias", "norm.weight", "proj.bias", "scale"]}
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.999)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt" / "checkpoint_last.pth"
    save_checkpoint(path, {"w": torch.ones(3)}, step=1)

    def dies_half_way(obj, handle):
        handle.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # as a Ctrl-C in the middle of writing

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"w": torch.zeros(3)}, step=2)
    assert os.listdir(path.parent) == ["checkpoint_last.pth"]  # no temporary file left behind
    assert load_checkpoint(path)["step"] == 1


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.pth"
    save_checkpoint(path, {"w": torch.ones(1000)})
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ConfigError, match="config key 'run.resume_ckpt_path': checkpoint '.*broken.pth' is damaged or "
                                          "cut short"):
        load_checkpoint(path, "run.resume_ckpt_path")
    with pytest.raises(ConfigError, match="config key 'run.resume_ckpt_path': no such checkpoint file"):
        load_checkpoint(tmp_path / "absent.pth", "run.resume_ckpt_path")


class Numbers(Dataset):
    def __init__(self, n, tag):
        self.n, self.tag = n, tag

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"id": f"{self.tag}{i}", "noise": torch.rand(())}


def test_plan_covers_each_source_once_per_pass():
    plan = BatchPlan([Source("a", Numbers(10, "a"), 1.0)], batch_size=5, world_size=1, rank=0, seed=3,
                     total_micro_steps=4)
    indices = [index for step in range(4) for _, index, _ in plan.keys(step)]
    assert sorted(indices[:10]) == list(range(10)) and sorted(indices[10:]) == list(range(10))
    assert indices[:10] != indices[10:]  # every pass is a new permutation


def test_ranks_split_the_global_batch_of_a_single_process():
    sources = [Source("a", Numbers(7, "a"), 1.0), Source("b", Numbers(5, "b"), 3.0)]
    single = BatchPlan(sources, 4, 1, 0, seed=0, total_micro_steps=30)
    ranks = [BatchPlan(sources, 2, 2, r, seed=0, total_micro_steps=30) for r in range(2)]
    for step in range(30):
        assert single.keys(step) == ranks[0].keys(step) + ranks[1].keys(step)


def test_sources_are_mixed_by_sample_ratio():
    sources = [Source("a", Numbers(7, "a"), 1.0), Source("b", Numbers(5, "b"), 3.0)]
    plan = BatchPlan(sources, 1, 1, 0, seed=0, total_micro_steps=4000)
    share_b = plan.choices.float().mean().item()
    assert abs(share_b - 0.75) < 0.03  # binomial std at n=4000 is 0.007


def test_unreadable_streams_and_empty_datasets_are_refused():
    class Stream(IterableDataset):
        def __iter__(self):
            yield {"id": "x"}

    with pytest.raises(ConfigError, match="datasets.shards: the runner cannot read a Stream stream: it reads streams "
                                          "that provide urls, read_pass, to_item .the webdataset builder. or "
                                          "indexable datasets"):
        as_sources([("shards", Stream(), 1.0)])
    with pytest.raises(ConfigError, match="dataset 'empty' is empty"):
        as_sources([("empty", Numbers(0, "e"), 1.0)])


def test_items_get_their_own_seeded_randomness_and_the_global_rng_is_untouched():
    items = PlannedItems([Source("a", Numbers(4, "a"), 1.0)])
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first, again, other = items[(0, 2, 99)], items[(0, 2, 99)], items[(0, 2, 100)]
    assert first["noise"] == again["noise"] != other["noise"]
    assert first["item_seed"] == 99 and first["source"] == "a"
    assert torch.equal(torch.get_rng_state(), state)


def run(**kwargs):
    return build_run_config(OmegaConf.create(kwargs))


@pytest.mark.parametrize("settings, message", [
    ({"init_lr": -1e-4}, "run.init_lr must be > 0, got -0.0001"),
    ({"init_lr": 0}, r"run.init_lr must be > 0, got 0.0"),
    ({"warmup_lr": -1}, r"run.warmup_lr must be >= 0, got -1"),
    ({"min_lr": 2e-4}, r"run.min_lr \(0.0002\) must not exceed run.init_lr \(0.0001\)"),
    ({"lr_sched": "cosine"}, "run.lr_sched: unknown LR schedule 'cosine' valid choices: linear_warmup_cosine_lr, "
                                "linear_warmup_step_lr"),
    ({"batch_size_train": 0}, "run.batch_size_train must be >= 1, got 0"),
    ({"precision": "fp8"}, "run.precision must be one of fp32, bf16, fp16, got 'fp8'"),
    ({"task": "captioning"}, "unknown key 'run.task'"),  # one recipe: no task layer to choose
    ({"iters_per_epok": 3}, "unknown key 'run.iters_per_epok' .did you mean 'iters_per_epoch'.."),
    ({"output_dir": "skingpt4/runs"}, "run.output_dir 'skingpt4/runs' is inside the skingpt4 package"),
])
def test_bad_run_settings_are_clear_errors(settings, message, monkeypatch):
    monkeypatch.chdir(os.path.dirname(os.path.dirname(__file__)))
    with pytest.raises(ConfigError, match=message):
        run(**settings)


def test_defaults_are_the_paper_and_minigpt4_settings():
    cfg = run()
    assert (cfg.init_lr, cfg.min_lr, cfg.warmup_lr, cfg.warmup_steps) == (1e-4, 8e-5, 1e-6, 5000)
    assert (cfg.max_epoch, cfg.iters_per_epoch, cfg.weight_decay, list(cfg.betas)) == (20, 5000, 0.05, [0.9, 0.999])
    assert cfg.lr_sched in registry.lr_schedulers and math.isclose(cfg.batch_size_train, 2)
