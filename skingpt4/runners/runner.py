"""The training loop: `max_epoch` x `iters_per_epoch` optimisation steps over endlessly re-iterated sources.

One optimisation step = `accum_grad_iters` micro-batches of `batch_size_train` items per process. The recipe's
step turns a batch into a loss (`train_step(model, batch)`, runners/recipe.py); the runner owns everything around it: data
plan, AdamW + LR schedule, autocast and loss scaling, gradient accumulation and clipping, DDP, metrics,
checkpoints, resume and clean stops.

Stopping: the first Ctrl-C (or SIGTERM, as sent by schedulers and torchrun) asks the loop to stop after
the current step; it then saves `checkpoint_last.pth` and returns. A second Ctrl-C aborts at once; the
last checkpoint on disk stays intact (checkpoints are written atomically). Model and optimizer only
change inside `optimizer.step()`, so a checkpoint always describes a whole number of steps.
"""
from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import IterableDataset
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from skingpt4.common.config import ConfigError
from skingpt4.common.precision import DTYPES, autocast
from skingpt4.datasets.bad_images import BadSampleCounter
from skingpt4.models import checkpoints as ckpt
from skingpt4.runners.data import Source, build_train_loader
from skingpt4.runners.distributed import DistInfo, all_reduce_mean, barrier, to_device
from skingpt4.runners.lr_schedules import ScheduleSpec, build_lr_scheduler
from skingpt4.runners.metrics import MetricsLog
from skingpt4.runners.validation import Validation
from skingpt4.runners import sharding
from skingpt4.runners.optim import build_optimizer, set_kernel

log = logging.getLogger("skingpt4.train")
LAST_CHECKPOINT = "checkpoint_last.pth"
# A run stops with a TrainingError after this many steps in a row without one usable sample (every batch all
# bad images): a dataset that is wholly unusable fails fast instead of "training" to loss nan. A mostly good
# dataset does not trip it: 20 all-bad steps in a row are vanishingly rare unless (nearly) every image is bad.
IDLE_STEPS_LIMIT = 20


class TrainingError(RuntimeError):
    """The run cannot go on (non-finite loss, no usable sample): train.py prints it in one line, exit status 1.
    The last checkpoint on disk is left as it was."""


@dataclass
class TrainResult:
    status: str  # finished | stopped (run.stop_after_iters) | interrupted (Ctrl-C / SIGTERM) | aborted (2nd Ctrl-C)
    step: int                   # optimisation steps done
    output_dir: Path
    checkpoint: Optional[Path]  # the checkpoint that holds the final state
    last_loss: Optional[float]  # mean loss of the last logged interval
    loss_curve: Optional[Path]


class _StopRequest:
    """SIGINT/SIGTERM -> a flag the loop checks between steps; a second SIGINT raises KeyboardInterrupt."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("received %s: stopping after the current step and saving a checkpoint "
                    "(press Ctrl-C again to abort at once)", signal.Signals(signum).name)

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a notebook worker): keep the default behaviour
                pass
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Runner:
    def __init__(self, cfg: DictConfig, train_step: Callable[[nn.Module, dict], dict], collate: Callable,
                 model: nn.Module, sources: Sequence[Source], config: dict, dist: DistInfo,
                 validation: Optional[Validation] = None):
        self.cfg, self.train_step, self.collate, self.model = cfg, train_step, collate, model
        self.sources, self.config, self.dist = sources, config, dist
        self.validation = validation  # its loss is logged after every epoch
        self.output_dir = Path(cfg.output_dir).expanduser()
        self.total_steps = cfg.max_epoch * cfg.iters_per_epoch
        if cfg.precision == "fp16" and dist.device.type != "cuda":
            raise ConfigError("run.precision=fp16 needs a CUDA device; on CPU use bf16 or fp32")
        self.sharded = cfg.sharding == "fsdp"
        if self.sharded:
            if not dist.distributed:
                raise ConfigError("run.sharding=fsdp shards the model over several processes; start them with "
                                  "torchrun --nproc-per-node N (or use run.sharding=none for one process)")
            sharding.shard_model(model, dist)  # before the optimizer: it steps on the shards
        self.optimizer = build_optimizer(model, cfg.init_lr, cfg.weight_decay, cfg.betas, cfg.optimizer_impl)
        self.optimizer_kernel = {k: self.optimizer.param_groups[0][k] for k in ("fused", "foreach")}
        spec = ScheduleSpec(cfg.init_lr, cfg.min_lr, cfg.warmup_lr, cfg.warmup_steps, cfg.iters_per_epoch,
                            cfg.max_epoch, cfg.lr_decay_rate)
        self.scheduler = build_lr_scheduler(cfg.lr_sched, self.optimizer, spec)
        self.scaler = torch.amp.GradScaler(dist.device.type, enabled=cfg.precision == "fp16")
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.step = 0
        self._last_batch = None  # stands in (with weight 0) for an all-bad batch under DDP
        self.window = _Window()  # the steps since the last regular metrics record (kept in checkpoints)
        self._resumed_window = False

    # ------------------------------------------------------------------------------------------ state
    def state(self, log_window: Optional[list] = None) -> dict:
        """Everything a resume needs; `log_window`: every rank's steps since the last metrics record. Sharded,
        gathering full tensors is a collective: every process builds the state."""
        sharded = self.sharded
        return {
            "model": sharding.full_trainable_state(self.model) if sharded else self.model.trainable_state_dict(),
            "optimizer": sharding.optimizer_state(self.model, self.optimizer) if sharded else
            self.optimizer.state_dict(),
            "sharding": self.cfg.sharding,
            "lr_scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "config": self.config,
            "epoch": self.step // self.cfg.iters_per_epoch,  # epochs completed
            "step": self.step,
            "schedule": {"max_epoch": self.cfg.max_epoch, "iters_per_epoch": self.cfg.iters_per_epoch},
            "global_batch_size": self.global_batch,
            "stream_readers": self.stream_readers,
            "log_window": log_window if log_window is not None else [[dict(r) for r in self.window.rows]],
            "rng": ckpt.rng_state(),
            "format": ckpt.CHECKPOINT_FORMAT,
        }

    def resume(self, path: str) -> None:
        payload = ckpt.read_training_checkpoint(path)
        check_resume_schedule(payload, path, self.cfg.max_epoch, self.cfg.iters_per_epoch)
        if payload.get("sharding", "none") != self.cfg.sharding:
            raise ConfigError(f"config key 'run.resume_ckpt_path': '{path}' was written with run.sharding="
                              f"{payload.get('sharding', 'none')}; resume it with the same setting")
        try:
            if self.sharded:
                sharding.load_full_trainable_state(self.model, payload["model"], path)
            else:
                self.model.load_trainable_state_dict(payload["model"], path)
        except ckpt.CheckpointError as err:  # name the key, as every other resume error does
            raise ckpt.CheckpointError(f"config key 'run.resume_ckpt_path': {err}") from None
        if self.sharded:
            sharding.load_optimizer_state(self.model, self.optimizer, payload["optimizer"])
        else:
            self.optimizer.load_state_dict(payload["optimizer"])
        set_kernel(self.optimizer, self.optimizer_kernel)  # the config's kernel, not the one the checkpoint ran
        self.scheduler.load_state_dict(payload["lr_scheduler"])
        if payload.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(payload["scaler"])
        ckpt.set_rng_state(payload["rng"])
        self.step = int(payload["step"])
        windows = payload.get("log_window")
        if windows is not None:  # the steps since the last record: the next record averages the same steps
            rows = windows[self.dist.rank] if len(windows) == self.dist.world_size else windows[0]
            self.window.rows = [dict(row) for row in rows]
            self._resumed_window = True
        if payload.get("global_batch_size", self.global_batch) != self.global_batch:
            log.warning("resuming with global batch %d, the checkpoint was written with %d: the data order "
                        "differs from the interrupted run", self.global_batch, payload["global_batch_size"])
        elif self.stream_readers and payload.get("stream_readers") != self.stream_readers:
            log.warning("resuming with %d stream readers (processes x DataLoader workers), the checkpoint was written "
                        "with %s: the webdataset sources are read in another order than the interrupted run's",
                        self.stream_readers, payload.get("stream_readers"))
        log.info("resumed from '%s' at step %d (epoch %d)", path, self.step, payload["epoch"])

    def _window_of_every_rank(self) -> list[list[dict]]:
        """[rank's window rows] for every process (each averages its own steps before the all-reduce)."""
        rows = [dict(row) for row in self.window.rows]
        if not self.dist.distributed:
            return [rows]
        gathered: list = [None] * self.dist.world_size
        torch.distributed.all_gather_object(gathered, rows)
        return gathered

    @property
    def stream_readers(self) -> int:
        """Readers of each webdataset source (processes x workers), on which its order depends; 0 without one."""
        has_stream = any(isinstance(s.dataset, IterableDataset) for s in self.sources)
        return self.dist.world_size * max(1, self.cfg.num_workers) if has_stream else 0

    @property
    def global_batch(self) -> int:
        return self.cfg.batch_size_train * self.dist.world_size * self.cfg.accum_grad_iters

    def save(self, name: str) -> Optional[Path]:
        windows = self._window_of_every_rank()  # a collective: every rank takes part
        if not self.dist.is_main and not self.sharded:
            return None
        state = self.state(windows)  # sharded: a collective too
        if not self.dist.is_main:
            return None
        return ckpt.save_checkpoint(self.output_dir / name, state.pop("model"), **state)

    # ------------------------------------------------------------------------------------------ loop
    def train(self) -> TrainResult:
        cfg = self.cfg
        if cfg.resume_ckpt_path:
            self.resume(cfg.resume_ckpt_path)
        elif (self.output_dir / LAST_CHECKPOINT).exists():
            raise ConfigError(already_holds_a_run(self.output_dir))
        if self.dist.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            ckpt.sweep_stale_temp_files(self.output_dir)  # what a run killed while saving left behind
            OmegaConf.save(OmegaConf.create(self.config), self.output_dir / "config.yaml")
        metrics = (MetricsLog(self.output_dir, self.step, cfg.tensorboard, drop_partial=self._resumed_window)
                   if self.dist.is_main else None)
        loader = build_train_loader(
            self.sources, self.collate, batch_size=cfg.batch_size_train, world_size=self.dist.world_size,
            rank=self.dist.rank, seed=cfg.seed, total_micro_steps=self.total_steps * cfg.accum_grad_iters,
            start_micro_step=self.step * cfg.accum_grad_iters, num_workers=cfg.num_workers,
            pin_memory=self.dist.device.type == "cuda")
        forward_model = self.model
        if self.dist.distributed and not self.sharded:
            device_ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
            # Buffers (rotary tables, position ids) are constants: no per-step sync. Parameters and buffers are
            # still broadcast from rank 0 once at construction.
            forward_model = DistributedDataParallel(self.model, device_ids=device_ids, forward_sync_buffers=False)
        self.model.train()
        stop_at = min(self.total_steps, cfg.stop_after_iters or self.total_steps)
        log.info("training steps %d..%d of %d (global batch %d = %d per process x %d processes x %d accumulation)",
                 self.step, stop_at, self.total_steps, self.global_batch, cfg.batch_size_train,
                 self.dist.world_size, cfg.accum_grad_iters)
        status, checkpoint = "finished", None
        window = self.window
        batches = iter(loader)
        show_bar = self.dist.is_main and cfg.progress_bar
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not show_bar, desc="train", dynamic_ncols=True)
        # While the bar runs, log lines go through tqdm.write: printed above the bar, never across it.
        redirect = logging_redirect_tqdm() if show_bar else contextlib.nullcontext()
        idle, first_step = 0, self.step
        try:
            with redirect, _StopRequest() as stop:
                while self.step < stop_at:
                    row = self._train_step(forward_model, batches)
                    window.add(row)
                    self.step += 1
                    idle = idle + 1 if row["skipped_batches"] == cfg.accum_grad_iters else 0
                    if self.step % IDLE_STEPS_LIMIT == 0 or self.step == stop_at:  # a collective: at fixed steps
                        # at the end, a shorter run that trained on nothing at all fails too
                        limit = IDLE_STEPS_LIMIT if self.step < stop_at else min(IDLE_STEPS_LIMIT, self.step - first_step)
                        if self._any_rank(idle >= limit):
                            raise TrainingError(self._idle_message(idle))
                    bar.update(1)
                    bar.set_postfix(loss=f"{window.last_loss:.4f}", lr=f"{window.last_lr:.2e}",
                                    samples_s=f"{window.last_rate:.1f}")
                    if self.step % cfg.log_freq == 0 or self.step == stop_at:
                        self._log(window, metrics, partial=self.step % cfg.log_freq != 0
                                  and self.step != self.total_steps)
                    if self.step % cfg.iters_per_epoch == 0:
                        self._validate(metrics)
                        checkpoint = self.save(f"checkpoint_{self.step // cfg.iters_per_epoch - 1}.pth")
                    if (self.step % cfg.iters_per_epoch == 0 or (cfg.save_freq and self.step % cfg.save_freq == 0)
                            or self.step == stop_at):
                        checkpoint = self.save(LAST_CHECKPOINT)
                    if self._any_rank(stop.requested):
                        status = "interrupted"
                        if window.unlogged:
                            self._log(window, metrics, partial=True)  # the steps since the last record
                        break
        except KeyboardInterrupt:
            # Second Ctrl-C, possibly inside optimizer.step(): saving now could store a half-updated state.
            status = "aborted"
        finally:
            bar.close()
        if status == "interrupted":
            checkpoint = self.save(LAST_CHECKPOINT)
        elif status == "finished" and self.step < self.total_steps:
            status = "stopped"
        if status != "finished":
            log.warning("%s at step %d of %d; continue with --options run.resume_ckpt_path=%s", status, self.step,
                        self.total_steps, self.output_dir / LAST_CHECKPOINT)
        curve = None
        if metrics is not None:
            log.info("skipped images: %s", format_bad_samples(self.bad_samples()) or "none")
            metrics.close()
            curve = metrics.update_curve(draw_png=True)
        barrier(self.dist)
        return TrainResult(status, self.step, self.output_dir, checkpoint, window.logged_loss, curve)

    def _any_rank(self, flag: bool) -> bool:
        if not self.dist.distributed:
            return flag
        return bool(all_reduce_mean(torch.tensor([float(flag)], device=self.dist.device), self.dist).item() > 0)

    def _diverged_message(self, loss: Optional[float], elsewhere: bool = False) -> str:
        where = "on another process" if elsewhere else f"{loss}"
        return (f"the loss is {'non-finite ' if elsewhere else ''}{where} at step {self.step + 1}: training diverged "
                "or the weights are broken; lower run.init_lr, set run.max_grad_norm, or use run.precision=bf16/fp32 "
                "(the last checkpoint on disk is kept)")

    def _train_step(self, forward_model: nn.Module, batches) -> dict:
        cfg, device = self.cfg, self.dist.device
        started = time.perf_counter()
        data_time, losses, bad_items, skipped, did_backward, non_finite = 0.0, [], 0, 0, False, None
        mixed_precision = autocast(device, DTYPES[cfg.precision])
        for micro in range(cfg.accum_grad_iters):
            fetch_start = time.perf_counter()
            packed = next(batches)
            data_time += time.perf_counter() - fetch_start
            bad_items += packed["bad_items"]
            batch = packed["batch"]
            if batch is None:
                skipped += 1
                if not self.dist.distributed:
                    continue  # nothing to learn from; other processes need no lock-step
                batch, weight = self._last_batch, 0.0  # keep DDP's collectives in step; contributes zero
                if batch is None:
                    raise TrainingError("the first batch of this process had only bad images; check the dataset")
            else:
                batch, weight = to_device(batch, device), 1.0
                self._last_batch = batch
            sync = micro == cfg.accum_grad_iters - 1 or not self.dist.distributed
            if self.sharded:
                forward_model.set_requires_gradient_sync(sync)
            no_sync = contextlib.nullcontext() if sync or self.sharded else forward_model.no_sync()
            with no_sync, mixed_precision:
                loss = self.train_step(forward_model, batch)["loss"]
                if not torch.isfinite(loss):
                    non_finite = loss.item()
                    if not self.dist.distributed:
                        raise TrainingError(self._diverged_message(non_finite))
                self.scaler.scale(loss * weight / cfg.accum_grad_iters).backward()
            did_backward = True
            if weight:
                losses.append(loss.detach().float())
        # Every process stops together: one process raising alone would leave the others waiting in a collective.
        if self.dist.distributed and self._any_rank(non_finite is not None):
            raise TrainingError(self._diverged_message(non_finite, elsewhere=non_finite is None))
        grad_norm = float("nan")
        if did_backward:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.trainable, cfg.max_grad_norm or math.inf)
            grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        lr = self.optimizer.param_groups[0]["lr"]
        with warnings.catch_warnings():
            # A step whose batches were all bad has no optimizer.step(); the schedule still advances.
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
            self.scheduler.step()
        elapsed = time.perf_counter() - started
        loss = torch.stack(losses).mean().item() if losses else float("nan")
        return {"loss": loss, "lr": lr, "grad_norm": grad_norm, "time": elapsed, "data_time": data_time,
                "samples": self.global_batch, "bad_items": bad_items, "skipped_batches": skipped}

    def _log(self, window: "_Window", metrics: Optional[MetricsLog], partial: bool = False) -> None:
        """Write a metrics record of the window. A `partial` one (a stop between two regular records) keeps the
        window's steps: they go into the checkpoint, so a resumed run's next record averages exactly the steps
        an uninterrupted run's does, and the partial record is dropped on resume."""
        summary = window.flush(keep=partial)
        # Mean over processes (all ranks reach this point at the same step, so the collective matches).
        loss = all_reduce_mean(torch.tensor([summary["loss"]], device=self.dist.device), self.dist).item()
        record = {"step": self.step, "epoch": self.step // self.cfg.iters_per_epoch, **summary, "loss": loss,
                  "bad_samples": self.bad_samples(), **({"partial": True} if partial else {})}
        window.logged_loss = loss
        if metrics is not None:
            metrics.write(record)
            metrics.update_curve()
            skipped = format_bad_samples(record["bad_samples"])
            log.info("step %d/%d loss %.4f lr %.3g grad_norm %.3g %.1f samples/s%s", self.step, self.total_steps,
                     loss, record["lr"], record["grad_norm"], record["samples_per_s"],
                     f"; skipped images: {skipped}" if skipped else "")

    def _validate(self, metrics: Optional[MetricsLog]) -> None:
        """The validation loss after an epoch (every rank runs it: see runners/validation.py), logged by rank 0."""
        if self.validation is None:
            return
        started = time.perf_counter()
        result = self.validation.run(self.model, self.train_step, self.dist.device, self.cfg.precision)
        record = {"step": self.step, "epoch": self.step // self.cfg.iters_per_epoch, **result,
                  "val_time": time.perf_counter() - started}
        if metrics is not None:
            metrics.write(record, group="validation")
            metrics.update_curve(draw_png=True)
            log.info("epoch %d validation loss %.4f over %d items (%s) in %.1f s", record["epoch"], result["val_loss"],
                     result["val_items"], ", ".join(f"{k} {v:.4f}" for k, v in result["val_loss_by_source"].items()),
                     record["val_time"])

    def _idle_message(self, idle: int) -> str:
        skipped = format_bad_samples(self.bad_samples()) or "none counted"
        return (f"no usable training sample in {idle} steps in a row (up to step {self.step}): every batch held only "
                f"bad images (skipped images: {skipped}); check the datasets (data_prep/check_notes.py lists bad "
                "images) and their max_pixels")

    def bad_samples(self) -> dict[str, dict[str, int]]:
        """{dataset: {reason: count}} of the samples this process and its DataLoader workers skipped so far
        (read-ahead included), for the datasets that count them."""
        return {s.name: s.dataset.bad.counts() for s in self.sources
                if isinstance(getattr(s.dataset, "bad", None), BadSampleCounter)}


def check_resume_schedule(payload: dict, path: str, max_epoch: int, iters_per_epoch: int) -> None:
    """A checkpoint continues only the schedule it was written by: the LR schedule, the data plan and the
    epoch checkpoints all follow max_epoch x iters_per_epoch, so another step count is refused, naming both."""
    step, total = int(payload.get("step", 0)), max_epoch * iters_per_epoch
    schedule = payload.get("schedule")  # absent from checkpoints written before it was recorded
    if not (isinstance(schedule, dict) and {"max_epoch", "iters_per_epoch"} <= set(schedule)):
        if step > total:
            raise ConfigError(f"config key 'run.resume_ckpt_path': '{path}' is step {step}, beyond the {total} steps "
                              f"this config trains ({max_epoch} x {iters_per_epoch}); resume with the run's "
                              f"run.max_epoch and run.iters_per_epoch, or start a new run from its weights with "
                              f"model.ckpt={path}")
        return
    epochs, iters = int(schedule["max_epoch"]), int(schedule["iters_per_epoch"])
    if (epochs, iters) != (max_epoch, iters_per_epoch):
        raise ConfigError(
            f"config key 'run.resume_ckpt_path': '{path}' is step {step} of a run of {epochs * iters} steps "
            f"({epochs} epochs x {iters} iterations), but this config trains {total} steps "
            f"({max_epoch} x {iters_per_epoch}); resume with run.max_epoch={epochs} "
            f"run.iters_per_epoch={iters}, or start a new run from its weights with model.ckpt={path}")


def already_holds_a_run(output_dir: Path) -> str:
    return (f"run.output_dir '{output_dir}' already holds a run ({LAST_CHECKPOINT}); continue it with "
            f"run.resume_ckpt_path={output_dir / LAST_CHECKPOINT} or choose another run.output_dir")


def format_bad_samples(bad: dict[str, dict[str, int]]) -> str:
    """'skincon: truncated=3, unreadable=1; dermnet: missing=2' ('' when nothing was skipped)."""
    return "; ".join(f"{name}: " + ", ".join(f"{reason}={n}" for reason, n in counts.items())
                     for name, counts in bad.items() if counts)


class _Window:
    """Accumulates per-step figures between two regular metric records (`rows` is saved in checkpoints)."""

    def __init__(self):
        self.rows: list[dict] = []
        self.unlogged = False  # steps were added since the last record (regular or partial)
        self.last_loss = self.last_lr = self.last_rate = float("nan")
        self.logged_loss: Optional[float] = None

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self.unlogged = True
        self.last_loss, self.last_lr = row["loss"], row["lr"]
        self.last_rate = row["samples"] / row["time"] if row["time"] > 0 else float("nan")

    def flush(self, keep: bool = False) -> dict:
        rows = self.rows
        self.rows, self.unlogged = (list(rows) if keep else []), False
        losses = [r["loss"] for r in rows if not math.isnan(r["loss"])]
        total_time = sum(r["time"] for r in rows)
        return {
            "loss": sum(losses) / len(losses) if losses else float("nan"),
            "lr": rows[-1]["lr"],
            "grad_norm": rows[-1]["grad_norm"],
            "samples_per_s": sum(r["samples"] for r in rows) / total_time if total_time > 0 else float("nan"),
            "data_time_frac": sum(r["data_time"] for r in rows) / total_time if total_time > 0 else 0.0,
            "bad_items": sum(r["bad_items"] for r in rows),
            "skipped_batches": sum(r["skipped_batches"] for r in rows),
        }
