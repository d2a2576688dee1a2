"""The LoRA fine-tuning recipe: setup -> train -> evaluate -> save.

    result = train(spec, on_event=print, should_stop=lambda: False)

`train` is the whole library seen from outside. It touches only the paths in the spec, reports
progress through `on_event`, polls `should_stop` before every optimizer step and micro-batch
(and between evaluation batches), and returns a TrainResult. A cancelled run returns
status="cancelled" and leaves no final artifacts; checkpoints written before stay for resume.

Data parallel: when this process is one rank of an initialised torch.distributed process group
with more than one rank (gloo on CPU, nccl on GPU; torchrun, torch.multiprocessing or Ray Train
set it up), the same `train` runs on every rank. Every rank builds the same model and the same
seeded order of batches; each takes every world_size-th example of a step's batch, and the
LoRA gradients are summed across ranks before clipping, so a step is the step one process
would take on the whole batch (the loss is still the mean over the batch's assistant tokens).
Rank 0 alone validates (and tells the others the loss), writes checkpoints and the final
artifacts, runs the evaluation and emits events; its `should_stop` stops every rank at the next
step. Only rank 0's TrainResult describes the run; the others return one without artifacts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import platform
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import peft
import safetensors
import structlog
import tokenizers
import torch
import torch.distributed as dist
import transformers
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from safetensors.torch import load_file
from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

from trainer.artifacts import write_final_artifacts
from trainer.base_models import LoadedBaseModel, load_base_model
from trainer.checkpoints import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    adapter_state,
    load_adapter_state,
    read_checkpoint,
    write_checkpoint,
)
from trainer.data import (
    TokenizedExample,
    dataset_fingerprint,
    make_batch,
    plan_micro_batches,
    tokenize_file,
)
from trainer.evaluate import evaluate_against_baselines, mean_target_loss
from trainer.hashing import sha256_json
from trainer.modeling import summed_target_loss, use_segmented_attention
from trainer.results import CheckpointInfo, TrainEvent, TrainResult
from trainer.spec import ResolvedHyperparameters, TrainSpec, resolve_hyperparameters

log = structlog.get_logger(__name__)

EventSink = Callable[[TrainEvent], None]
StopSignal = Callable[[], bool]

ARTIFACT_DIR_NAME = "model"
CHECKPOINT_DIR_NAME = "checkpoints"
# Fields that say where a run writes, not what it computes: a resume may change them.
_NOT_FINGERPRINTED = (
    "output_dir",
    "resume_from_checkpoint",
    "export_merged",
    "merged_agreement_tolerance",
)


class RunCancelled(Exception):
    """should_stop() said so; unwinds the run without writing final artifacts."""


@dataclass
class DataParallel:
    """This process's place in a torch.distributed process group of more than one rank."""

    rank: int
    world_size: int
    backend: str
    # This session's share of the training: examples and assistant tokens, counted here.
    examples: int = 0
    target_tokens: int = 0
    # Everyone's counts, gathered once training ends (rank order).
    examples_per_rank: list[int] | None = None
    target_tokens_per_rank: list[int] | None = None

    @property
    def leader(self) -> bool:
        return self.rank == 0


def data_parallel() -> DataParallel | None:
    """The process group this process trains in, or None for a single-process run."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return DataParallel(
        rank=dist.get_rank(), world_size=dist.get_world_size(), backend=dist.get_backend()
    )


@dataclass
class Progress:
    """Everything about a run that changes step by step and must survive a resume."""

    step: int = 0
    trained_tokens: int = 0
    processed_tokens: int = 0
    last_loss: float | None = None
    best_validation_loss: float | None = None
    best_step: int | None = None
    rounds_without_improvement: int = 0
    stopped_early: bool = False
    loss_history: list[dict[str, float]] = field(default_factory=list)
    validation_history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Run:
    spec: TrainSpec
    device: torch.device
    autocast_dtype: torch.dtype | None
    base: LoadedBaseModel
    model: PeftModel
    target_modules: list[str]
    train_examples: list[TokenizedExample]
    held_out: list[TokenizedExample]
    held_out_info: dict[str, Any]
    too_long_lines: list[int]
    data_files: list[dict[str, Any]]
    hyper: ResolvedHyperparameters
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    fingerprint: str
    progress: Progress
    best_adapter: dict[str, torch.Tensor] | None = None
    checkpoints: list[CheckpointInfo] = field(default_factory=list)
    parallel: DataParallel | None = None


def train(
    spec: TrainSpec,
    on_event: EventSink | None = None,
    should_stop: StopSignal | None = None,
) -> TrainResult:
    parallel = data_parallel()
    follower = parallel is not None and not parallel.leader
    # Ranks other than 0 report nothing and take their stop from rank 0.
    emit: EventSink = (on_event if not follower else None) or (lambda event: None)
    stop_requested: StopSignal = (should_stop if not follower else None) or (lambda: False)

    def check_stop() -> None:
        if stop_requested():
            raise RunCancelled

    started = time.monotonic()
    run = setup(spec)
    emit(TrainEvent("run.started", run.progress.step, _run_facts(run)))
    try:
        train_loop(run, emit, check_stop)
        if run.parallel is not None:
            gather_rank_counts(run)
            if follower:
                return _result(run, status="succeeded", seconds=time.monotonic() - started)
        restore_best_adapter(run)
        evaluation = evaluate(run, emit, check_stop) if spec.evaluation.enabled else None
        check_stop()
        result = save(run, evaluation, seconds=time.monotonic() - started)
    except RunCancelled:
        log.info("run.cancelled", step=run.progress.step)
        emit(TrainEvent("run.cancelled", run.progress.step, {}))
        return _result(run, status="cancelled", seconds=time.monotonic() - started)
    emit(
        TrainEvent(
            "run.succeeded",
            run.progress.step,
            {
                "adapter_sha256": result.adapter_sha256,
                "artifact_dir": result.artifact_dir,
                "files": len(result.files),
            },
        )
    )
    return result


# ----------------------------------------------------------------------------------- setup


def setup(spec: TrainSpec) -> Run:
    parallel = data_parallel()
    device, autocast_dtype = _pick_device(spec.device)
    _seed_everything(spec.seed)

    base = load_base_model(
        spec.base_model_dir,
        device=device,
        dtype=torch.bfloat16 if autocast_dtype is not None else torch.float32,
    )
    use_segmented_attention(base.model)

    training = tokenize_file(spec.training_file, base.tokenizer, max_seq_len=spec.max_seq_len)
    data_files = [{**dataset_fingerprint(spec.training_file), "role": "training"}]
    if spec.validation_file:
        validation = tokenize_file(
            spec.validation_file, base.tokenizer, max_seq_len=spec.max_seq_len
        )
        train_examples, held_out = training.examples, validation.examples
        held_out_info = {"source": "validation_file", "examples": len(held_out)}
        data_files.append({**dataset_fingerprint(spec.validation_file), "role": "validation"})
        too_long = training.too_long_lines + validation.too_long_lines
    else:
        train_examples, held_out = _split_held_out(
            training.examples, fraction=spec.evaluation.held_out_fraction, seed=spec.seed
        )
        held_out_info = {
            "source": "training_split",
            "examples": len(held_out),
            "fraction": spec.evaluation.held_out_fraction,
            "seed": spec.seed,
            "line_numbers": sorted(example.line_number for example in held_out),
        }
        too_long = training.too_long_lines
    data_files[0]["examples"] = len(training.examples)
    if spec.validation_file:
        data_files[1]["examples"] = len(held_out)

    hyper = resolve_hyperparameters(
        spec.hyperparameters,
        n_training_examples=len(train_examples),
        base_learning_rate=spec.base_learning_rate,
    )
    steps_per_epoch = math.ceil(len(train_examples) / hyper.batch_size)
    total_steps = hyper.n_epochs * steps_per_epoch
    if spec.max_steps is not None:
        total_steps = min(total_steps, spec.max_steps)
    warmup_steps = math.ceil(spec.warmup_ratio * total_steps)

    target_modules = spec.lora.target_modules or attention_and_mlp_linears(base.model)
    lora_config = LoraConfig(
        r=spec.lora.r,
        lora_alpha=spec.lora.alpha,
        lora_dropout=spec.lora.dropout,
        target_modules=target_modules,
        use_rslora=spec.lora.use_rslora,
        use_dora=spec.lora.use_dora,
        bias="none",
        task_type=TaskType.CAUSAL_LM,
    )
    torch.manual_seed(spec.seed)
    with warnings.catch_warnings():
        # peft 0.21 still asks transformers 5 for the renamed `is_gradient_checkpointing`.
        warnings.filterwarnings(
            "ignore", message=".*is_gradient_checkpointing", category=FutureWarning
        )
        model = get_peft_model(base.model, lora_config)
    if spec.init_adapter_dir:
        load_initial_adapter(model, Path(spec.init_adapter_dir), lora_config)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable,
        lr=hyper.learning_rate,
        weight_decay=spec.weight_decay,
        fused=device.type == "cuda",
    )
    make_schedule = (
        get_cosine_schedule_with_warmup
        if spec.lr_scheduler == "cosine"
        else get_linear_schedule_with_warmup
    )
    scheduler = make_schedule(
        optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps
    )

    run = Run(
        spec=spec,
        device=device,
        autocast_dtype=autocast_dtype,
        base=base,
        model=model,
        target_modules=list(target_modules),
        train_examples=list(train_examples),
        held_out=list(held_out),
        held_out_info=held_out_info,
        too_long_lines=too_long,
        data_files=data_files,
        hyper=hyper,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        optimizer=optimizer,
        scheduler=scheduler,
        fingerprint=_fingerprint(spec, base, data_files),
        progress=Progress(),
        parallel=parallel,
    )
    if spec.resume_from_checkpoint:
        resumed = read_checkpoint(
            Path(spec.resume_from_checkpoint),
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            fingerprint=run.fingerprint,
        )
        run.progress = Progress(**resumed.progress)
        run.best_adapter = resumed.best_adapter
        log.info("run.resumed", step=run.progress.step, checkpoint=spec.resume_from_checkpoint)
    if parallel is not None:
        # The same seed gave every rank the same adapter; rank 0's is copied to the others
        # anyway (as DDP does). Dropout then draws differently on each rank.
        for parameter in trainable:
            dist.broadcast(parameter.data, src=0)
        torch.manual_seed(spec.seed * 1_000_003 + parallel.rank)
        log.info(
            "run.data_parallel",
            rank=parallel.rank,
            world_size=parallel.world_size,
            backend=parallel.backend,
        )
    return run


# What must agree between a parent adapter and the new run for its weights to mean the same.
_ADAPTER_CONFIG_FIELDS = ("r", "lora_alpha", "target_modules", "use_rslora", "use_dora")


class AdapterMismatchError(ValueError):
    """init_adapter_dir holds an adapter whose LoRA configuration differs from the spec's."""


def load_initial_adapter(model: PeftModel, directory: Path, lora_config: LoraConfig) -> None:
    """Continue from a parent run: its adapter weights replace the fresh initialisation."""
    nested = directory / "adapter"
    if not (directory / ADAPTER_CONFIG).exists() and (nested / ADAPTER_CONFIG).exists():
        directory = nested
    config_path, weights_path = directory / ADAPTER_CONFIG, directory / ADAPTER_WEIGHTS
    if not config_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(
            f"init_adapter_dir {directory} has no {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}"
        )
    parent = json.loads(config_path.read_text())
    mine = {
        "r": lora_config.r,
        "lora_alpha": lora_config.lora_alpha,
        "target_modules": sorted(lora_config.target_modules),
        "use_rslora": lora_config.use_rslora,
        "use_dora": lora_config.use_dora,
    }
    theirs = {name: parent.get(name) for name in _ADAPTER_CONFIG_FIELDS}
    theirs["target_modules"] = sorted(theirs["target_modules"] or [])
    differ = {
        name: {"parent": theirs[name], "spec": mine[name]}
        for name in _ADAPTER_CONFIG_FIELDS
        if theirs[name] != mine[name]
    }
    if differ:
        raise AdapterMismatchError(
            f"the adapter in {directory} was trained with a different LoRA configuration; "
            f"continuing from it needs the same values: {differ}"
        )
    load_adapter_state(model, load_file(weights_path))
    log.info("run.adapter_initialised", init_adapter_dir=str(directory))


def attention_and_mlp_linears(model: torch.nn.Module) -> list[str]:
    """Names of every linear layer except the output head: attention and MLP projections."""
    head = model.get_output_embeddings()
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and module is not head
        }
    )


# ----------------------------------------------------------------------------------- train


def train_loop(run: Run, emit: EventSink, check_stop: Callable[[], None]) -> None:
    spec, progress = run.spec, run.progress
    session_started, session_start_step = time.monotonic(), progress.step
    while progress.step < run.total_steps:
        if run.parallel is None:
            check_stop()
        else:
            check_stop_together(run, check_stop)
        step_started = time.monotonic()
        step_examples = examples_for_step(run, progress.step)
        if run.parallel is None:
            loss, grad_norm, processed, trained = train_step(run, step_examples, check_stop)
        else:
            loss, grad_norm, processed, trained = train_step_data_parallel(run, step_examples)
        progress.step += 1
        progress.processed_tokens += processed
        progress.trained_tokens += trained
        progress.last_loss = loss

        now = time.monotonic()
        learning_rate = run.scheduler.get_last_lr()[0]
        seconds_per_step = (now - session_started) / (progress.step - session_start_step)
        remaining = seconds_per_step * (run.total_steps - progress.step)
        progress.loss_history.append(
            {"step": progress.step, "loss": loss, "learning_rate": learning_rate}
        )
        emit(
            TrainEvent(
                "train.step",
                progress.step,
                {
                    "total_steps": run.total_steps,
                    "epoch": progress.step / run.steps_per_epoch,
                    "loss": loss,
                    "learning_rate": learning_rate,
                    "grad_norm": grad_norm,
                    "tokens_per_second": processed / max(now - step_started, 1e-9),
                    "step_tokens": processed,
                    "trained_tokens": progress.trained_tokens,
                    "processed_tokens": progress.processed_tokens,
                    "seconds_remaining": remaining,
                    "estimated_finish": (
                        dt.datetime.now(dt.UTC) + dt.timedelta(seconds=remaining)
                    ).isoformat(),
                },
            )
        )

        epoch_ended = progress.step % run.steps_per_epoch == 0
        if epoch_ended:
            emit(
                TrainEvent(
                    "train.epoch_completed",
                    progress.step,
                    {"epoch": progress.step // run.steps_per_epoch},
                )
            )
        if _validation_due(run, epoch_ended):
            validate(run, emit)
        checkpoint_due = (
            spec.checkpoint_every_steps and progress.step % spec.checkpoint_every_steps == 0
        )
        if checkpoint_due and (run.parallel is None or run.parallel.leader):
            checkpoint(run, emit)
        patience = spec.early_stopping_patience
        if patience is not None and progress.rounds_without_improvement >= patience:
            progress.stopped_early = True
            emit(
                TrainEvent("train.early_stopped", progress.step, {"best_step": progress.best_step})
            )
            break


def examples_for_step(run: Run, step: int) -> list[TokenizedExample]:
    """The batch of a step: a slice of that epoch's seeded shuffle, so resume finds it again."""
    epoch, index_in_epoch = divmod(step, run.steps_per_epoch)
    order = torch.randperm(
        len(run.train_examples),
        generator=torch.Generator().manual_seed(run.spec.seed * 1_000_003 + epoch),
    ).tolist()
    size = run.hyper.batch_size
    return [
        run.train_examples[i] for i in order[index_in_epoch * size : (index_in_epoch + 1) * size]
    ]


def train_step(
    run: Run, examples: list[TokenizedExample], check_stop: Callable[[], None]
) -> tuple[float, float, int, int]:
    """One optimizer step over `examples`, accumulated over micro-batches.

    The loss is the mean over every assistant token of the step, however the step is split.
    Returns (loss, gradient norm before clipping, tokens processed, tokens trained).
    """
    spec = run.spec
    target_tokens = max(1, sum(example.n_target_tokens for example in examples))
    micro_batches = plan_micro_batches(
        examples, max_tokens=spec.micro_batch_tokens, packing=spec.packing
    )
    loss_sum, processed = 0.0, 0
    for group in micro_batches:
        check_stop()
        batch = make_batch(
            group, packing=spec.packing, pad_token_id=run.base.tokenizer.pad_token_id
        )
        batch = batch.to(run.device)
        with _autocast(run):
            summed = summed_target_loss(run.model, batch)
        (summed / target_tokens).backward()
        loss_sum += summed.item()
        processed += batch.n_tokens
    trainable = [p for p in run.model.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(trainable, spec.max_grad_norm).item()
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return loss_sum / target_tokens, grad_norm, processed, target_tokens


def train_step_data_parallel(
    run: Run, examples: list[TokenizedExample]
) -> tuple[float, float, int, int]:
    """train_step on this rank's share of the step's batch (every world_size-th example).

    Every rank knows the whole batch, so each divides by the batch's assistant-token count;
    the summed gradients are then the single-process gradient of the whole batch, and every
    rank clips and steps the same way, keeping the replicas equal. No stop check inside the
    step: the ranks must run the same collectives, so they stop together between steps.
    """
    spec, parallel = run.spec, run.parallel
    assert parallel is not None
    target_tokens = max(1, sum(example.n_target_tokens for example in examples))
    mine = examples[parallel.rank :: parallel.world_size]
    micro_batches = plan_micro_batches(
        mine, max_tokens=spec.micro_batch_tokens, packing=spec.packing
    )
    loss_sum, processed = 0.0, 0
    for group in micro_batches:
        batch = make_batch(
            group, packing=spec.packing, pad_token_id=run.base.tokenizer.pad_token_id
        )
        batch = batch.to(run.device)
        with _autocast(run):
            summed = summed_target_loss(run.model, batch)
        (summed / target_tokens).backward()
        loss_sum += summed.item()
        processed += batch.n_tokens
    trainable = [p for p in run.model.parameters() if p.requires_grad]
    _sum_gradients(trainable)
    totals = torch.tensor([loss_sum, float(processed)], dtype=torch.float64, device=run.device)
    dist.all_reduce(totals)
    parallel.examples += len(mine)
    parallel.target_tokens += sum(example.n_target_tokens for example in mine)
    grad_norm = torch.nn.utils.clip_grad_norm_(trainable, spec.max_grad_norm).item()
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return totals[0].item() / target_tokens, grad_norm, int(totals[1].item()), target_tokens


def _sum_gradients(parameters: list[torch.nn.Parameter]) -> None:
    """One all-reduce (sum) of every LoRA gradient, flattened; a rank that had no examples
    this step adds zeros."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([grad.reshape(-1) for grad in grads])
    dist.all_reduce(flat)
    offset = 0
    for parameter in parameters:
        n = parameter.numel()
        parameter.grad = flat[offset : offset + n].view_as(parameter).to(parameter.dtype)
        offset += n


def check_stop_together(run: Run, check_stop: Callable[[], None]) -> None:
    """Any rank's stop (in practice rank 0's should_stop) stops every rank before the step."""
    stopping = 0.0
    try:
        check_stop()
    except RunCancelled:
        stopping = 1.0
    flag = torch.tensor([stopping], device=run.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item():
        raise RunCancelled


def gather_rank_counts(run: Run) -> None:
    """Every rank learns how many examples and assistant tokens each rank trained on."""
    parallel = run.parallel
    assert parallel is not None
    mine = torch.tensor([parallel.examples, parallel.target_tokens], device=run.device)
    everyone = [torch.zeros_like(mine) for _ in range(parallel.world_size)]
    dist.all_gather(everyone, mine)
    parallel.examples_per_rank = [int(counts[0].item()) for counts in everyone]
    parallel.target_tokens_per_rank = [int(counts[1].item()) for counts in everyone]


def _validation_due(run: Run, epoch_ended: bool) -> bool:
    every = run.spec.eval_every_steps
    step = run.progress.step
    return (
        step == run.total_steps
        or (every is not None and step % every == 0)
        or (every is None and epoch_ended)
    )


def validate(run: Run, emit: EventSink) -> None:
    """Validation loss; the best adapter so far is kept in memory (and in checkpoints).

    Data parallel: rank 0 computes it and the others take its number, so every rank keeps
    the same best adapter and stops early at the same step."""
    progress, parallel = run.progress, run.parallel
    loss = 0.0
    if parallel is None or parallel.leader:
        loss = mean_target_loss(
            run.model,
            run.held_out,
            max_tokens=run.spec.micro_batch_tokens,
            device=run.device,
            autocast_dtype=run.autocast_dtype,
        )
    if parallel is not None:
        shared = torch.tensor([loss], dtype=torch.float64, device=run.device)
        dist.broadcast(shared, src=0)
        loss = shared.item()
    improved = progress.best_validation_loss is None or loss < progress.best_validation_loss
    if improved:
        progress.best_validation_loss, progress.best_step = loss, progress.step
        progress.rounds_without_improvement = 0
        run.best_adapter = adapter_state(run.model)
    else:
        progress.rounds_without_improvement += 1
    progress.validation_history.append({"step": progress.step, "loss": loss})
    emit(
        TrainEvent(
            "train.validation",
            progress.step,
            {
                "validation_loss": loss,
                "best_validation_loss": progress.best_validation_loss,
                "improved": improved,
            },
        )
    )


def checkpoint(run: Run, emit: EventSink) -> None:
    directory = Path(run.spec.output_dir) / CHECKPOINT_DIR_NAME / f"step-{run.progress.step:06d}"
    adapter_sha256 = write_checkpoint(
        directory,
        model=run.model,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        step=run.progress.step,
        fingerprint=run.fingerprint,
        progress=asdict(run.progress),
        best_adapter=run.best_adapter,
    )
    info = CheckpointInfo(
        step=run.progress.step, path=str(directory), adapter_sha256=adapter_sha256
    )
    run.checkpoints.append(info)
    emit(TrainEvent("checkpoint.written", run.progress.step, asdict(info)))


def restore_best_adapter(run: Run) -> None:
    if run.best_adapter is not None and run.progress.best_step != run.progress.step:
        load_adapter_state(run.model, run.best_adapter)
        log.info("run.best_adapter_restored", best_step=run.progress.best_step)


# -------------------------------------------------------------------------------- evaluate


def evaluate(run: Run, emit: EventSink, check_stop: Callable[[], None]) -> dict[str, Any]:
    report = evaluate_against_baselines(
        run.model,
        run.base.tokenizer,
        held_out=run.held_out,
        few_shot_pool=run.train_examples,
        spec=run.spec.evaluation,
        seed=run.spec.seed,
        max_tokens=run.spec.micro_batch_tokens,
        device=run.device,
        autocast_dtype=run.autocast_dtype,
        check_stop=check_stop,
    )
    emit(
        TrainEvent(
            "evaluation.completed",
            run.progress.step,
            {
                "systems": report["systems"],
                "ood_probe": report["ood_probe"],
                "verdict": report["verdict"],
            },
        )
    )
    return report


# ------------------------------------------------------------------------------------ save


def save(run: Run, evaluation: dict[str, Any] | None, *, seconds: float) -> TrainResult:
    artifact_dir = Path(run.spec.output_dir) / ARTIFACT_DIR_NAME
    result = _result(run, status="succeeded", seconds=seconds)
    adapter_sha256, files, merged_check = write_final_artifacts(
        artifact_dir,
        model=run.model,
        tokenizer=run.base.tokenizer,
        adapter=adapter_state(run.model),
        resolved_config=result.resolved_config,
        metrics={
            "loss_history": run.progress.loss_history,
            "validation_history": run.progress.validation_history,
            "best_validation_loss": run.progress.best_validation_loss,
            "best_step": run.progress.best_step,
            "stopped_early": run.progress.stopped_early,
            "trained_tokens": run.progress.trained_tokens,
            "processed_tokens": run.progress.processed_tokens,
            "seconds": seconds,
        },
        evaluation=evaluation,
        card_facts={
            "base_model_name": run.base.path.name,
            "config": result.resolved_config,
            "device": result.device,
            "seconds": seconds,
            "steps_completed": result.steps_completed,
            "processed_tokens": result.processed_tokens,
            "trained_tokens": result.trained_tokens,
            "best_validation_loss": result.best_validation_loss,
            "best_step": result.best_step,
            "stopped_early": result.stopped_early,
        },
        export_merged_weights=run.spec.export_merged,
        merged_tolerance=run.spec.merged_agreement_tolerance,
    )
    result.artifact_dir = str(artifact_dir)
    result.adapter_sha256 = adapter_sha256
    result.files = files
    result.evaluation = evaluation
    result.merged_check = merged_check
    log.info("run.saved", path=str(artifact_dir), adapter_sha256=adapter_sha256, files=len(files))
    return result


# --------------------------------------------------------------------------------- helpers


def _pick_device(requested: str) -> tuple[torch.device, torch.dtype | None]:
    """The device, and the autocast dtype (bf16 on CUDA; None means plain fp32)."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' was asked for, but CUDA is not available")
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), None


def _autocast(run: Run) -> contextlib.AbstractContextManager:
    if run.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=run.device.type, dtype=run.autocast_dtype)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _split_held_out(
    examples: list[TokenizedExample], *, fraction: float, seed: int
) -> tuple[list[TokenizedExample], list[TokenizedExample]]:
    if len(examples) < 2:
        raise ValueError("a held-out split needs at least 2 examples; give a validation file")
    count = min(len(examples) - 1, max(1, round(fraction * len(examples))))
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    held = set(order[:count])
    return (
        [example for i, example in enumerate(examples) if i not in held],
        [example for i, example in enumerate(examples) if i in held],
    )


def _fingerprint(spec: TrainSpec, base: LoadedBaseModel, data_files: list[dict[str, Any]]) -> str:
    spec_fields = {k: v for k, v in spec.to_dict().items() if k not in _NOT_FINGERPRINTED}
    return sha256_json(
        {
            "spec": spec_fields,
            "base_model": base.manifest.manifest_sha256,
            "data": [data_file["sha256"] for data_file in data_files],
        }
    )


def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
    }


def _run_facts(run: Run) -> dict[str, Any]:
    facts = {
        "device": str(run.device),
        "train_examples": len(run.train_examples),
        "held_out_examples": len(run.held_out),
        "total_steps": run.total_steps,
        "resolved_hyperparameters": asdict(run.hyper),
    }
    if run.parallel is not None:
        facts["world_size"] = run.parallel.world_size
    return facts


def _resolved_config(run: Run) -> dict[str, Any]:
    config = {
        "spec": run.spec.to_dict(),
        "resolved_hyperparameters": asdict(run.hyper),
        "schedule": {
            "steps_per_epoch": run.steps_per_epoch,
            "total_steps": run.total_steps,
            "warmup_steps": run.warmup_steps,
        },
        "base_model": {
            "path": str(run.base.path),
            "manifest_sha256": run.base.manifest.manifest_sha256,
            "source": run.base.manifest.source,
        },
        "data_files": run.data_files,
        "held_out": run.held_out_info,
        "too_long_lines": run.too_long_lines,
        "target_modules": run.target_modules,
        "trainable_parameters": sum(p.numel() for p in run.model.parameters() if p.requires_grad),
        "device": str(run.device),
        "autocast_dtype": str(run.autocast_dtype) if run.autocast_dtype else None,
        "torch_threads": torch.get_num_threads(),
        "library_versions": library_versions(),
        "run_fingerprint": run.fingerprint,
    }
    if run.parallel is not None:
        # Only in data-parallel runs, so a single-process run's config is as it always was.
        config["data_parallel"] = {
            "world_size": run.parallel.world_size,
            "backend": run.parallel.backend,
            "sharding": "every world_size-th example of each step's batch, from the rank",
            "gradients": "summed across ranks before clipping",
            "examples_per_rank": run.parallel.examples_per_rank,
            "target_tokens_per_rank": run.parallel.target_tokens_per_rank,
        }
    return config


def _result(run: Run, *, status: str, seconds: float) -> TrainResult:
    progress = run.progress
    return TrainResult(
        status=status,
        steps_completed=progress.step,
        total_steps=run.total_steps,
        base_model_sha256=run.base.manifest.manifest_sha256,
        data_files=run.data_files,
        resolved_config=_resolved_config(run),
        trained_tokens=progress.trained_tokens,
        processed_tokens=progress.processed_tokens,
        seconds=seconds,
        device=str(run.device),
        checkpoints=list(run.checkpoints),
        final_train_loss=progress.last_loss,
        best_validation_loss=progress.best_validation_loss,
        best_step=progress.best_step,
        stopped_early=progress.stopped_early,
    )
