"""The ablation arms (what each trains) and the training stages they share, resumable.

An arm is a sequence of training stages (none, step 1, step 2, or step 1 then step 2) and what its step 2
changes (no doctors' notes; LoRA adapters on the LLM). Stages are shared between the arms of one seed: step 1 of
seed s is trained once and every arm that starts from it reads its checkpoint. A stage is done when its
`stage.json` exists (written atomically after training finished); a stage folder without it is the remains of an
interrupted run and is trained again from scratch.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from skingpt4.common.config import ConfigError, load_config


@dataclass(frozen=True)
class Arm:
    name: str
    what: str                                   # one line for the table
    steps: tuple[str, ...]                      # () | ("step1",) | ("step2",) | ("step1", "step2")
    drop_datasets: tuple[str, ...] = ()         # step-2 datasets left out
    step2_options: tuple[str, ...] = ()         # extra overrides of the step-2 training config
    eval_options: tuple[str, ...] = ()          # extra overrides of the evaluation config (e.g. the LoRA shape)


TRAIN_SCRIPT = Path(__file__).resolve().parents[2] / "train.py"   # the repository's training entry point
LORA = "model.lora={r: 8, alpha: 16, dropout: 0.05, target_modules: [q_proj, k_proj, v_proj, o_proj]}"
ARMS = {arm.name: arm for arm in (
    Arm("untrained", "no training: a random projection (seeded)", ()),
    Arm("step1_only", "step 1 (SKINCON concepts) only", ("step1",)),
    Arm("step2_only", "step 2 (Dermnet + notes) from a random projection", ("step2",)),
    Arm("both_steps", "step 1, then step 2 from its projection (the paper's recipe)", ("step1", "step2")),
    Arm("both_steps_no_notes", "step 1, then step 2 on Dermnet alone (no doctors' notes)", ("step1", "step2"),
        drop_datasets=("skin_notes",)),
    Arm("both_steps_lora", "step 1, then step 2 with LoRA adapters on the LLM (projection + adapters)",
        ("step1", "step2"), step2_options=(LORA,), eval_options=(LORA,)),
)}
DEFAULT_ARMS = tuple(ARMS)


@dataclass
class Plan:
    """Where the arms' training recipes come from: two training configs and the options common to both."""

    step1_cfg: Path
    step2_cfg: Path
    train_options: tuple[str, ...] = ()
    step2_options: tuple[str, ...] = ()   # for the step-2 stages only (e.g. a shorter step-2 budget)
    launcher: Optional[str] = None   # e.g. "torchrun --nproc-per-node 8": training runs as that subprocess
    log: object = field(default=None, repr=False)

    def stage_configs(self, arm: Arm, seed: int, out: Path) -> list[tuple[str, Path, DictConfig]]:
        """[(stage name, output folder, config)] of the arm's training stages for one seed; a stage's name says
        what it depends on, so equal names are one stage."""
        stages, previous = [], None
        for step in arm.steps:
            name = "step1" if step == "step1" else f"step2_{arm.name}"
            folder = out / "runs" / f"seed{seed}" / name
            base = self.step1_cfg if step == "step1" else self.step2_cfg
            options = [*self.train_options, f"run.seed={seed}", f"run.output_dir={folder}"]
            if step == "step2":
                options.append(f"model.ckpt={previous / 'checkpoint_last.pth'}" if previous else "model.ckpt=null")
                options += [*self.step2_options, *arm.step2_options]
            cfg = load_config(base, options)
            if step == "step2":
                for dataset in arm.drop_datasets:
                    if dataset not in cfg.datasets:
                        raise ConfigError(f"arm {arm.name}: the step-2 config has no dataset '{dataset}' to leave out")
                    del cfg.datasets[dataset]
            stages.append((name, folder, cfg))
            previous = folder
        return stages


def config_digest(cfg: DictConfig) -> str:
    return hashlib.sha256(OmegaConf.to_yaml(cfg, resolve=True).encode()).hexdigest()


def write_json_atomic(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def stage_done(folder: Path, cfg: DictConfig) -> bool:
    try:
        record = json.loads((folder / "stage.json").read_text())
    except (OSError, ValueError):
        return False
    return record.get("config_sha256") == config_digest(cfg) and (folder / "checkpoint_last.pth").is_file()


def train_stage(plan: Plan, folder: Path, cfg: DictConfig) -> dict:
    """Train one stage (unless done); returns its stage record."""
    if stage_done(folder, cfg):
        return json.loads((folder / "stage.json").read_text())
    shutil.rmtree(folder, ignore_errors=True)  # the remains of an interrupted run (or another recipe)
    folder.mkdir(parents=True)
    config_file = folder / "train_config.yaml"
    config_file.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if plan.launcher:
        command = [*shlex.split(plan.launcher), str(TRAIN_SCRIPT), "--cfg-path", str(config_file)]
        with open(folder / "train.log", "w") as log:
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise RuntimeError(f"training failed (exit {done.returncode}): {' '.join(command)}; see {folder / 'train.log'}")
        status, step, loss = "finished", None, None
    else:
        from skingpt4.runners.recipe import run_training

        with torch.random.fork_rng():
            result, model = run_training(cfg)
        del model
        if result.status not in ("finished", "stopped"):
            raise KeyboardInterrupt(f"training of {folder} was {result.status}")
        status, step, loss = result.status, result.step, result.last_loss
    if not (folder / "checkpoint_last.pth").is_file():
        raise RuntimeError(f"training wrote no {folder / 'checkpoint_last.pth'}")
    record = {"status": status, "steps": step, "last_loss": loss, "config_sha256": config_digest(cfg)}
    write_json_atomic(folder / "stage.json", record)
    return record


def untrained_checkpoint(model, seed: int, path: Path) -> Path:
    """A random projection of the model's shape (nn.Linear's own init under `seed`), in the checkpoint format."""
    if path.is_file():
        return path
    proj = model.llama_proj
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        fresh = torch.nn.Linear(proj.in_features, proj.out_features)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": {"llama_proj.weight": fresh.weight.detach(), "llama_proj.bias": fresh.bias.detach()},
                "epoch": 0}, tmp)
    os.replace(tmp, path)
    return path


def arm_fingerprint(arm: Arm, seed: int, stage_digests: Sequence[str], eval_digest: str) -> str:
    blob = json.dumps({"arm": asdict(arm), "seed": seed, "stages": list(stage_digests), "eval": eval_digest},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()

