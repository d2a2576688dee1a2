"""The LoRA fine-tuning recipe: setup -> train -> evaluate -> save.

    result = train(spec, on_event=print, should_stop=lambda: False)

`train` is the whole library seen from outside. It touches only the paths in the spec, reports
progress through `on_event` (one event class per kind, trainer.results), polls `should_stop`
before every optimizer step and micro-batch (and between evaluation batches), and returns a
TrainResult. A cancelled run returns status="cancelled" and leaves no final artifacts;
checkpoints written before stay for resume.

Pausing: `should_pause` is polled between optimizer steps only, never inside one, so the
run stops on a step boundary: it writes that step's checkpoint (unless it has one) and
returns status="paused". Resuming from that checkpoint continues with the same data order,
adapter, optimizer and schedule state and random generators, so the loss curve is the one
an uninterrupted run draws. During evaluation a pause stops the run only when the last
step's checkpoint exists (``checkpoint_every_epoch`` writes it when training ends); the
resumed run then skips straight to evaluation. Checkpoint decisions (every N steps, every
epoch, every N minutes) are taken between steps and cost a clock read.

DPO (``spec.method == "dpo"``, trainer.dpo): the same setup, loop, checkpoints and save; the
data are preference pairs, a step's loss is the mean sigmoid DPO loss over its pairs (the
reference is the base model with the adapter disabled), validation reports that loss, and
the evaluation ranks the held-out pairs with the tuned and the base model
(trainer.evaluate.evaluate_preferences). DPO runs in one process.

Data parallel (trainer.parallel): when this process is one rank of a process group, the same
`train` runs on every rank; each trains its share of every batch and the LoRA gradients are
summed before clipping, so a step is the step one process would take on the whole batch (the
loss is still the mean over the batch's assistant tokens). Rank 0 alone validates (and tells
the others the loss), writes checkpoints and the final artifacts, runs the evaluation and
emits events; its `should_stop` stops every rank at the next step. Only rank 0's TrainResult
describes the run; the others return one without artifacts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import platform
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import peft
import safetensors
import structlog
import tokenizers
import torch
import transformers
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

from trainer.artifacts import write_final_artifacts
from trainer.base_models import LoadedBaseModel, load_base_model
from trainer.checkpoints import (
    adapter_state,
    load_adapter_state,
    load_initial_adapter,
    read_checkpoint,
    write_checkpoint,
)
from trainer.data import (
    PreferencePair,
    TokenizedExample,
    dataset_fingerprint,
    make_batch,
    plan_micro_batches,
    tokenize_file,
    tokenize_preference_file,
)
from trainer.dpo import ReferenceLogps, accumulate_gradients, score_pairs
from trainer.evaluate import evaluate_against_baselines, evaluate_preferences, score_targets
from trainer.hashing import sha256_json
from trainer.mislabels import find_suspects
from trainer.modeling import summed_target_loss, use_segmented_attention
from trainer.parallel import DataParallel, GradientSync, data_parallel, no_gradient_sync
from trainer.results import (
    CheckpointEvent,
    CheckpointInfo,
    EarlyStoppedEvent,
    EpochEvent,
    EvaluationEvent,
    RunCancelledEvent,
    RunPausedEvent,
    RunStartedEvent,
    RunSucceededEvent,
    StepEvent,
    TrainEvent,
    TrainResult,
    ValidationEvent,
)
from trainer.spec import DPO, ResolvedHyperparameters, TrainSpec, resolve_hyperparameters

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
    "checkpoint_every_epoch",
    "checkpoint_every_minutes",
)


class RunCancelled(Exception):
    """should_stop() said so; unwinds the run without writing final artifacts."""


class RunPaused(Exception):
    """should_pause() said so, at a step boundary whose checkpoint exists; unwinds the run."""


@dataclass
class ModelSetup:
    """The base model with its LoRA adapter, and where it computes."""

    base: LoadedBaseModel
    peft: PeftModel
    target_modules: list[str]
    trainable: list[torch.nn.Parameter]  # the adapter's weights, in optimizer order
    device: torch.device
    autocast_dtype: torch.dtype | None  # bf16 on CUDA; None: plain fp32


@dataclass
class DataSetup:
    """Tokenised examples, and what the run records about the files they came from."""

    train_examples: list[TokenizedExample]
    held_out: list[TokenizedExample]
    held_out_info: dict[str, Any]
    too_long_lines: list[int]
    data_files: list[dict[str, Any]]
    # DPO: the preference pairs (train_examples and held_out stay empty).
    train_pairs: list[PreferencePair] = field(default_factory=list)
    held_out_pairs: list[PreferencePair] = field(default_factory=list)

    @property
    def n_train(self) -> int:
        return len(self.train_pairs) or len(self.train_examples)

    @property
    def n_held_out(self) -> int:
        return len(self.held_out_pairs) or len(self.held_out)


@dataclass
class OptimizerSetup:
    """Resolved hyperparameters, the schedule's length, optimizer and learning-rate schedule."""

    hyper: ResolvedHyperparameters
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    # Run on the accumulated gradients before clipping: a sum across ranks, or nothing.
    sync_gradients: GradientSync


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
    validation_history: list[dict[str, float | None]] = field(default_factory=list)
    # Seconds the run had trained for when the checkpoint was written (earlier sessions
    # included), so a resumed run reports the whole run's time, never its pauses.
    seconds: float = 0.0


@dataclass
class Run:
    spec: TrainSpec
    fingerprint: str  # what a checkpoint must have been written by to be resumed here
    model: ModelSetup
    data: DataSetup
    optim: OptimizerSetup
    progress: Progress
    best_adapter: dict[str, torch.Tensor] | None = None
    checkpoints: list[CheckpointInfo] = field(default_factory=list)
    parallel: DataParallel | None = None
    started_at: float = field(default_factory=time.monotonic)  # this session's start
    prior_seconds: float = 0.0  # the earlier sessions', up to the checkpoint resumed from
    # The newest checkpoint's step (this session's, or the one it resumed from) and when it
    # was written (monotonic, this session), for checkpoint_every_minutes.
    last_checkpoint_step: int | None = None
    last_checkpoint_at: float = field(default_factory=time.monotonic)
    # DPO: the reference log-probabilities of the training and of the held-out pairs.
    references: dict[str, ReferenceLogps] = field(default_factory=dict)

    def reference(self, which: str) -> ReferenceLogps:
        """The reference log-probabilities of one file's pairs ("train" or "held_out")."""
        if which not in self.references:
            self.references[which] = ReferenceLogps(
                self.model.peft,
                max_tokens=self.spec.micro_batch_tokens,
                device=self.model.device,
                autocast_dtype=self.model.autocast_dtype,
            )
        return self.references[which]

    @property
    def leader(self) -> bool:
        """Rank 0 (or the only process): the one that writes and reports."""
        return self.parallel is None or self.parallel.leader

    def seconds(self) -> float:
        return self.prior_seconds + (time.monotonic() - self.started_at)


@dataclass(frozen=True)
class StepStats:
    """One optimizer step, counted over the whole batch (every rank's share)."""

    loss: float  # mean over the batch's assistant tokens
    grad_norm: float  # before clipping
    processed_tokens: int  # through the model, prompts included
    trained_tokens: int  # assistant tokens: the targets of the loss


def train(
    spec: TrainSpec,
    on_event: EventSink | None = None,
    should_stop: StopSignal | None = None,
    should_pause: StopSignal | None = None,
) -> TrainResult:
    run = setup(spec)
    follower = not run.leader
    # Ranks other than 0 report nothing and take their stop and pause from rank 0.
    emit: EventSink = (on_event if not follower else None) or (lambda event: None)
    stop_requested: StopSignal = (should_stop if not follower else None) or (lambda: False)
    pause_requested: StopSignal = (should_pause if not follower else None) or (lambda: False)

    def check_stop() -> None:
        if stop_requested():
            raise RunCancelled

    def check_stop_or_pause() -> None:
        """Between evaluation batches: a pause unwinds only when there is a checkpoint of
        the last step to resume from."""
        check_stop()
        if run.last_checkpoint_step == run.progress.step and pause_requested():
            raise RunPaused

    emit(_started_event(run))
    try:
        train_loop(run, emit, check_stop, pause_requested)
        if run.parallel is not None:
            run.parallel.gather_counts(device=run.model.device)
            if follower:
                return _result(run, status="succeeded", seconds=run.seconds())
        restore_best_adapter(run)
        evaluation = evaluate(run, emit, check_stop_or_pause) if spec.evaluation.enabled else None
        check_stop()
        mislabels = find_mislabels(run, check_stop_or_pause) if _scores_mislabels(spec) else None
        check_stop()
        result = save(run, evaluation, seconds=run.seconds())
        result.suspected_mislabels = mislabels
    except RunCancelled:
        log.info("run.cancelled", step=run.progress.step)
        emit(RunCancelledEvent(run.progress.step))
        return _result(run, status="cancelled", seconds=run.seconds())
    except RunPaused:
        log.info("run.paused", step=run.progress.step, checkpoint=run.last_checkpoint_step)
        emit(RunPausedEvent(run.progress.step))
        return _result(run, status="paused", seconds=run.seconds())
    emit(
        RunSucceededEvent(
            run.progress.step,
            adapter_sha256=result.adapter_sha256,
            artifact_dir=result.artifact_dir,
            files=len(result.files),
        )
    )
    return result


# ----------------------------------------------------------------------------------- setup


def setup(spec: TrainSpec) -> Run:
    """The base model, the data (in its tokens), the adapter and the optimizer; then the
    checkpoint to resume from and the process group."""
    started_at = time.monotonic()
    parallel = data_parallel()
    if parallel is not None and spec.method == DPO:
        raise ValueError("DPO runs in one process; data parallel is for supervised runs")
    device, autocast_dtype = _pick_device(spec.device)
    _seed_everything(spec.seed)
    base = load_base_model(
        spec.base_model_dir,
        device=device,
        dtype=torch.bfloat16 if autocast_dtype is not None else torch.float32,
    )
    use_segmented_attention(base.model)
    data = _setup_data(spec, base)
    model = _setup_model(spec, base, device, autocast_dtype)
    optim = _setup_optimizer(spec, model, data, parallel)
    run = Run(
        spec=spec,
        fingerprint=_fingerprint(spec, model.base, data.data_files),
        model=model,
        data=data,
        optim=optim,
        progress=Progress(),
        parallel=parallel,
        started_at=started_at,
    )
    if spec.resume_from_checkpoint:
        _resume(run, Path(spec.resume_from_checkpoint))
    if parallel is not None:
        parallel.join(model.trainable, seed=spec.seed)
    return run


def _setup_data(spec: TrainSpec, base: LoadedBaseModel) -> DataSetup:
    """Training and held-out examples: the validation file, or a seeded split of training."""
    if spec.method == DPO:
        return _setup_preference_data(spec, base)
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
    if spec.exclude_lines:
        train_examples = _without_excluded_lines(spec, train_examples, data_files[0])
    return DataSetup(
        train_examples=list(train_examples),
        held_out=list(held_out),
        held_out_info=held_out_info,
        too_long_lines=too_long,
        data_files=data_files,
    )


def _setup_preference_data(spec: TrainSpec, base: LoadedBaseModel) -> DataSetup:
    """DPO: preference pairs from the training file, held out as for supervised runs."""
    tokenizer, max_seq_len = base.tokenizer, spec.max_seq_len
    training = tokenize_preference_file(spec.training_file, tokenizer, max_seq_len=max_seq_len)
    data_files = [{**dataset_fingerprint(spec.training_file), "role": "training", "examples": 0}]
    too_long = list(training.too_long_lines)
    if spec.validation_file:
        validation = tokenize_preference_file(
            spec.validation_file, tokenizer, max_seq_len=max_seq_len
        )
        train_pairs, held_out = training.pairs, validation.pairs
        held_out_info: dict[str, Any] = {"source": "validation_file", "examples": len(held_out)}
        data_files.append(
            {
                **dataset_fingerprint(spec.validation_file),
                "role": "validation",
                "examples": len(held_out),
            }
        )
        too_long += validation.too_long_lines
    else:
        train_pairs, held_out = _split_held_out(
            training.pairs, fraction=spec.evaluation.held_out_fraction, seed=spec.seed
        )
        held_out_info = {
            "source": "training_split",
            "examples": len(held_out),
            "fraction": spec.evaluation.held_out_fraction,
            "seed": spec.seed,
            "line_numbers": sorted(pair.line_number for pair in held_out),
        }
    data_files[0]["examples"] = len(training.pairs)
    return DataSetup(
        train_examples=[],
        held_out=[],
        held_out_info=held_out_info,
        too_long_lines=too_long,
        data_files=data_files,
        train_pairs=list(train_pairs),
        held_out_pairs=list(held_out),
    )


def _setup_model(
    spec: TrainSpec,
    base: LoadedBaseModel,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
) -> ModelSetup:
    """The base model with a fresh seeded adapter (or a parent run's weights)."""
    lora_config = LoraConfig(
        r=spec.lora.r,
        lora_alpha=spec.lora.alpha,
        lora_dropout=spec.lora.dropout,
        # peft's own "every linear layer but the output head" (on Llama the attention and MLP
        # projections): the same modules, so the same adapter, as our former list of names.
        # peft records what it resolved in adapter_config.json: the layer names, or on a
        # model with fewer than 20 linear layers (the tiny test models) every module path.
        target_modules=spec.lora.target_modules or "all-linear",
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
        load_initial_adapter(model, Path(spec.init_adapter_dir))
    model.train()
    return ModelSetup(
        base=base,
        peft=model,
        target_modules=list(spec.lora.target_modules or _adapted_layer_names(model)),
        trainable=[p for p in model.parameters() if p.requires_grad],
        device=device,
        autocast_dtype=autocast_dtype,
    )


def _adapted_layer_names(model: PeftModel) -> list[str]:
    """The layer names peft resolved "all-linear" to (it lists module paths on small models)."""
    return sorted({name.rsplit(".", 1)[-1] for name in model.peft_config["default"].target_modules})


def _setup_optimizer(
    spec: TrainSpec, model: ModelSetup, data: DataSetup, parallel: DataParallel | None
) -> OptimizerSetup:
    """Every "auto" resolved from the training set's size; AdamW on the adapter only."""
    hyper = resolve_hyperparameters(
        spec.hyperparameters,
        n_training_examples=data.n_train,
        base_learning_rate=spec.base_learning_rate,
    )
    steps_per_epoch = math.ceil(data.n_train / hyper.batch_size)
    total_steps = hyper.n_epochs * steps_per_epoch
    if spec.max_steps is not None:
        total_steps = min(total_steps, spec.max_steps)
    warmup_steps = math.ceil(spec.warmup_ratio * total_steps)
    optimizer = torch.optim.AdamW(
        model.trainable,
        lr=hyper.learning_rate,
        weight_decay=spec.weight_decay,
        fused=model.device.type == "cuda",
    )
    make_schedule = (
        get_cosine_schedule_with_warmup
        if spec.lr_scheduler == "cosine"
        else get_linear_schedule_with_warmup
    )
    return OptimizerSetup(
        hyper=hyper,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        optimizer=optimizer,
        scheduler=make_schedule(
            optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps
        ),
        sync_gradients=parallel.sum_gradients if parallel is not None else no_gradient_sync,
    )


def _resume(run: Run, checkpoint_dir: Path) -> None:
    """Adapter, optimizer, schedule, random generators and progress from a checkpoint."""
    resumed = read_checkpoint(
        checkpoint_dir,
        model=run.model.peft,
        optimizer=run.optim.optimizer,
        scheduler=run.optim.scheduler,
        fingerprint=run.fingerprint,
    )
    run.progress = Progress(**resumed.progress)
    run.best_adapter = resumed.best_adapter
    run.prior_seconds = run.progress.seconds
    run.last_checkpoint_step = run.progress.step
    run.last_checkpoint_at = time.monotonic()
    log.info("run.resumed", step=run.progress.step, checkpoint=str(checkpoint_dir))


# ----------------------------------------------------------------------------------- train


def train_loop(
    run: Run,
    emit: EventSink,
    check_stop: Callable[[], None],
    pause_requested: StopSignal | None = None,
) -> None:
    spec, progress, optim = run.spec, run.progress, run.optim
    session_started, session_start_step = time.monotonic(), progress.step
    while progress.step < optim.total_steps and not progress.stopped_early:
        if _stop_between_steps(run, check_stop, pause_requested):
            pause(run, emit)
        step_started = time.monotonic()
        if spec.method == DPO:
            stats = dpo_train_step(run, pairs_for_step(run, progress.step), check_stop)
        else:
            stats = train_step(run, examples_for_step(run, progress.step), check_stop)
        progress.step += 1
        progress.processed_tokens += stats.processed_tokens
        progress.trained_tokens += stats.trained_tokens
        progress.last_loss = stats.loss
        emit(_record_step(run, stats, step_started, session_started, session_start_step))

        epoch_ended = progress.step % optim.steps_per_epoch == 0
        if epoch_ended:
            emit(EpochEvent(progress.step, epoch=progress.step // optim.steps_per_epoch))
        if _validation_due(run, epoch_ended):
            validate(run, emit)
        patience = spec.early_stopping_patience
        # Decided before the checkpoint, so that one records it and a resume stops too.
        progress.stopped_early = (
            patience is not None and progress.rounds_without_improvement >= patience
        )
        if _checkpoint_due(run, epoch_ended) and run.leader:
            checkpoint(run, emit)
        if progress.stopped_early:
            emit(EarlyStoppedEvent(progress.step, best_step=progress.best_step))
    # Training is over: a pause or a lost worker from here on resumes at evaluation.
    last_has_one = run.last_checkpoint_step == progress.step
    if spec.checkpoint_every_epoch and run.leader and progress.step > 0 and not last_has_one:
        checkpoint(run, emit)


def _checkpoint_due(run: Run, epoch_ended: bool) -> bool:
    """After a step: every N steps, at each epoch's end, or N minutes after the last one."""
    spec, step = run.spec, run.progress.step
    if spec.checkpoint_every_steps and step % spec.checkpoint_every_steps == 0:
        return True
    if spec.checkpoint_every_epoch and epoch_ended:
        return True
    minutes = spec.checkpoint_every_minutes
    return minutes is not None and time.monotonic() - run.last_checkpoint_at >= minutes * 60


def pause(run: Run, emit: EventSink) -> NoReturn:
    """Stop on this step boundary: its checkpoint first, unless it has one (the one resumed
    from) or nothing was trained yet (a resume then starts over, identically)."""
    has_one = run.last_checkpoint_step == run.progress.step
    if run.leader and run.progress.step > 0 and not has_one:
        checkpoint(run, emit)
    raise RunPaused


def _step_indices(run: Run, step: int) -> list[int]:
    """The batch of a step: a slice of that epoch's seeded shuffle, so resume finds it again."""
    epoch, index_in_epoch = divmod(step, run.optim.steps_per_epoch)
    order = torch.randperm(
        run.data.n_train,
        generator=torch.Generator().manual_seed(run.spec.seed * 1_000_003 + epoch),
    ).tolist()
    size = run.optim.hyper.batch_size
    return order[index_in_epoch * size : (index_in_epoch + 1) * size]


def examples_for_step(run: Run, step: int) -> list[TokenizedExample]:
    return [run.data.train_examples[i] for i in _step_indices(run, step)]


def pairs_for_step(run: Run, step: int) -> list[PreferencePair]:
    return [run.data.train_pairs[i] for i in _step_indices(run, step)]


def train_step(
    run: Run, examples: list[TokenizedExample], check_stop: Callable[[], None]
) -> StepStats:
    """One optimizer step over `examples`, accumulated over micro-batches.

    The loss is the mean over every assistant token of the step, however the step is split.
    Data parallel: this rank trains its share of the batch but divides by the whole batch's
    assistant tokens, so the gradient sync (a sum) leaves every rank with the single-process
    gradient of the whole batch, and every rank clips and steps the same way. No stop check
    inside such a step: the ranks must run the same collectives, so they stop together
    between steps.
    """
    spec, model, optim, parallel = run.spec, run.model, run.optim, run.parallel
    target_tokens = max(1, sum(example.n_target_tokens for example in examples))
    mine = examples if parallel is None else parallel.shard(examples)
    micro_batches = plan_micro_batches(
        mine, max_tokens=spec.micro_batch_tokens, packing=spec.packing
    )
    loss_sum, processed = 0.0, 0
    for group in micro_batches:
        if parallel is None:
            check_stop()
        batch = make_batch(
            group, packing=spec.packing, pad_token_id=model.base.tokenizer.pad_token_id
        )
        batch = batch.to(model.device)
        with _autocast(model):
            summed = summed_target_loss(model.peft, batch)
        (summed / target_tokens).backward()
        loss_sum += summed.item()
        processed += batch.n_tokens
    optim.sync_gradients(model.trainable)
    if parallel is not None:
        loss_sum, processed = parallel.step_totals(loss_sum, processed, device=model.device)
        parallel.count_share(mine, sum(example.n_target_tokens for example in mine))
    grad_norm = torch.nn.utils.clip_grad_norm_(model.trainable, spec.max_grad_norm).item()
    optim.optimizer.step()
    optim.scheduler.step()
    optim.optimizer.zero_grad(set_to_none=True)
    return StepStats(
        loss=loss_sum / target_tokens,
        grad_norm=grad_norm,
        processed_tokens=processed,
        trained_tokens=target_tokens,
    )


def dpo_train_step(
    run: Run, pairs: list[PreferencePair], check_stop: Callable[[], None]
) -> StepStats:
    """One optimizer step over preference pairs: the mean DPO loss of the step's pairs."""
    spec, model, optim = run.spec, run.model, run.optim
    totals = accumulate_gradients(
        model.peft,
        pairs,
        reference=run.reference("train"),
        beta=spec.dpo.resolved_beta,
        step_pairs=len(pairs),
        max_tokens=spec.micro_batch_tokens,
        autocast=lambda: _autocast(model),
        check_stop=check_stop,
    )
    grad_norm = torch.nn.utils.clip_grad_norm_(model.trainable, spec.max_grad_norm).item()
    optim.optimizer.step()
    optim.scheduler.step()
    optim.optimizer.zero_grad(set_to_none=True)
    return StepStats(
        loss=totals.loss_sum / max(1, len(pairs)),
        grad_norm=grad_norm,
        processed_tokens=totals.processed_tokens,
        trained_tokens=totals.target_tokens,
    )


_GO_ON, _PAUSE, _STOP = 0, 1, 2


def _stop_between_steps(
    run: Run, check_stop: Callable[[], None], pause_requested: StopSignal | None
) -> bool:
    """Raises RunCancelled on a stop; True when the run is to pause here. Data parallel:
    every rank takes the strongest of the ranks' signals (in practice rank 0's), in one
    all-reduce."""
    if run.parallel is None:
        check_stop()
        return pause_requested is not None and pause_requested()
    try:
        check_stop()
        signal = _PAUSE if pause_requested is not None and pause_requested() else _GO_ON
    except RunCancelled:
        signal = _STOP
    agreed = run.parallel.highest(signal, device=run.model.device)
    if agreed == _STOP:
        raise RunCancelled
    return agreed == _PAUSE


def _record_step(
    run: Run,
    stats: StepStats,
    step_started: float,
    session_started: float,
    session_start_step: int,
) -> StepEvent:
    """The step's loss into the history, and its event with throughput and time left."""
    progress, optim = run.progress, run.optim
    now = time.monotonic()
    learning_rate = optim.scheduler.get_last_lr()[0]
    seconds_per_step = (now - session_started) / (progress.step - session_start_step)
    remaining = seconds_per_step * (optim.total_steps - progress.step)
    progress.loss_history.append(
        {"step": progress.step, "loss": stats.loss, "learning_rate": learning_rate}
    )
    return StepEvent(
        progress.step,
        total_steps=optim.total_steps,
        epoch=progress.step / optim.steps_per_epoch,
        loss=stats.loss,
        learning_rate=learning_rate,
        grad_norm=stats.grad_norm,
        tokens_per_second=stats.processed_tokens / max(now - step_started, 1e-9),
        step_tokens=stats.processed_tokens,
        trained_tokens=progress.trained_tokens,
        processed_tokens=progress.processed_tokens,
        seconds_remaining=remaining,
        estimated_finish=(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=remaining)).isoformat(),
    )


def _validation_due(run: Run, epoch_ended: bool) -> bool:
    every = run.spec.eval_every_steps
    step = run.progress.step
    return (
        step == run.optim.total_steps
        or (every is not None and step % every == 0)
        or (every is None and epoch_ended)
    )


def validate(run: Run, emit: EventSink) -> None:
    """Validation loss; the best adapter so far is kept in memory (and in checkpoints).

    Data parallel: rank 0 computes it and the others take its number, so every rank keeps
    the same best adapter and stops early at the same step."""
    progress, parallel, model = run.progress, run.parallel, run.model
    loss, accuracy = 0.0, None
    if run.spec.method == DPO:
        # The DPO loss of the held-out pairs; token accuracy means nothing here.
        loss = score_pairs(
            model.peft,
            run.data.held_out_pairs,
            reference=run.reference("held_out"),
            beta=run.spec.dpo.resolved_beta,
            max_tokens=run.spec.micro_batch_tokens,
            device=model.device,
            autocast_dtype=model.autocast_dtype,
        ).loss
    elif run.leader:
        score = score_targets(
            model.peft,
            run.data.held_out,
            max_tokens=run.spec.micro_batch_tokens,
            device=model.device,
            autocast_dtype=model.autocast_dtype,
        )
        loss, accuracy = score.loss, score.accuracy
    if parallel is not None:
        loss = parallel.leaders_value(loss, device=model.device)
    improved = progress.best_validation_loss is None or loss < progress.best_validation_loss
    if improved:
        progress.best_validation_loss, progress.best_step = loss, progress.step
        progress.rounds_without_improvement = 0
        run.best_adapter = adapter_state(model.peft)
    else:
        progress.rounds_without_improvement += 1
    progress.validation_history.append({"step": progress.step, "loss": loss, "accuracy": accuracy})
    emit(
        ValidationEvent(
            progress.step,
            validation_loss=loss,
            best_validation_loss=progress.best_validation_loss,
            improved=improved,
            validation_accuracy=accuracy,
        )
    )


def checkpoint(run: Run, emit: EventSink) -> None:
    directory = Path(run.spec.output_dir) / CHECKPOINT_DIR_NAME / f"step-{run.progress.step:06d}"
    metrics = checkpoint_metrics(run)
    run.progress.seconds = run.seconds()
    adapter_sha256 = write_checkpoint(
        directory,
        model=run.model.peft,
        optimizer=run.optim.optimizer,
        scheduler=run.optim.scheduler,
        step=run.progress.step,
        fingerprint=run.fingerprint,
        progress=asdict(run.progress),
        best_adapter=run.best_adapter,
    )
    info = CheckpointInfo(
        step=run.progress.step, path=str(directory), adapter_sha256=adapter_sha256
    )
    run.checkpoints.append(info)
    run.last_checkpoint_step, run.last_checkpoint_at = info.step, time.monotonic()
    emit(
        CheckpointEvent(
            info.step, path=info.path, adapter_sha256=info.adapter_sha256, metrics=metrics
        )
    )


def checkpoint_metrics(run: Run) -> dict[str, float | None]:
    """OpenAI's checkpoint metrics. The training batch's loss is the step's own; its token
    accuracy is scored on that batch now (one forward pass per checkpoint, so the training
    step itself computes nothing extra). The validation figures are those of a validation
    run at this very step (the whole held-out set, so ``full_valid_*`` are the same
    numbers), null when none ran at it (a checkpoint between epochs)."""
    progress, model = run.progress, run.model
    train_accuracy = None
    if progress.step > 0 and run.spec.method != DPO:
        batch = examples_for_step(run, progress.step - 1)
        train_accuracy = score_targets(
            model.peft,
            batch,
            max_tokens=run.spec.micro_batch_tokens,
            device=model.device,
            autocast_dtype=model.autocast_dtype,
        ).accuracy
    history = progress.validation_history
    validation = history[-1] if history and history[-1]["step"] == progress.step else {}
    return {
        "train_loss": progress.last_loss,
        "train_mean_token_accuracy": train_accuracy,
        "valid_loss": validation.get("loss"),
        "valid_mean_token_accuracy": validation.get("accuracy"),
        "full_valid_loss": validation.get("loss"),
        "full_valid_mean_token_accuracy": validation.get("accuracy"),
    }


def restore_best_adapter(run: Run) -> None:
    if run.best_adapter is not None and run.progress.best_step != run.progress.step:
        load_adapter_state(run.model.peft, run.best_adapter)
        log.info("run.best_adapter_restored", best_step=run.progress.best_step)


# -------------------------------------------------------------------------------- evaluate


def evaluate(run: Run, emit: EventSink, check_stop: Callable[[], None]) -> dict[str, Any]:
    if run.spec.method == DPO:
        report = evaluate_preferences(
            run.model.peft,
            run.model.base.tokenizer,
            held_out=run.data.held_out_pairs,
            reference=run.reference("held_out"),
            beta=run.spec.dpo.resolved_beta,
            spec=run.spec.evaluation,
            max_tokens=run.spec.micro_batch_tokens,
            device=run.model.device,
            autocast_dtype=run.model.autocast_dtype,
            check_stop=check_stop,
        )
    else:
        report = _evaluate_supervised(run, check_stop)
    emit(
        EvaluationEvent(
            run.progress.step,
            systems=report["systems"],
            ood_probe=report["ood_probe"],
            verdict=report["verdict"],
        )
    )
    return report


def _evaluate_supervised(run: Run, check_stop: Callable[[], None]) -> dict[str, Any]:
    return evaluate_against_baselines(
        run.model.peft,
        run.model.base.tokenizer,
        held_out=run.data.held_out,
        few_shot_pool=run.data.train_examples,
        spec=run.spec.evaluation,
        seed=run.spec.seed,
        max_tokens=run.spec.micro_batch_tokens,
        device=run.model.device,
        autocast_dtype=run.model.autocast_dtype,
        check_stop=check_stop,
    )


# ---------------------------------------------------------------------- suspected mislabels


def _scores_mislabels(spec: TrainSpec) -> bool:
    return spec.mislabels.enabled and spec.method != DPO


def find_mislabels(run: Run, check_stop: Callable[[], None]) -> dict[str, Any]:
    """Every training example scored under the tuned adapter; the outliers listed for a
    data owner's review (trainer.mislabels). Rank 0 only, like the evaluation."""
    return find_suspects(
        run.model.peft,
        run.model.base.tokenizer,
        run.data.train_examples,
        spec=run.spec.mislabels,
        max_tokens=run.spec.micro_batch_tokens,
        generation_batch_size=run.spec.evaluation.generation_batch_size,
        device=run.model.device,
        autocast_dtype=run.model.autocast_dtype,
        check_stop=check_stop,
    )


# ------------------------------------------------------------------------------------ save


def save(run: Run, evaluation: dict[str, Any] | None, *, seconds: float) -> TrainResult:
    artifact_dir = Path(run.spec.output_dir) / ARTIFACT_DIR_NAME
    result = _result(run, status="succeeded", seconds=seconds)
    progress = run.progress
    adapter_sha256, files, merged_check = write_final_artifacts(
        artifact_dir,
        model=run.model.peft,
        tokenizer=run.model.base.tokenizer,
        adapter=adapter_state(run.model.peft),
        resolved_config=result.resolved_config,
        metrics={
            "loss_history": progress.loss_history,
            "validation_history": progress.validation_history,
            "best_validation_loss": progress.best_validation_loss,
            "best_step": progress.best_step,
            "stopped_early": progress.stopped_early,
            "trained_tokens": progress.trained_tokens,
            "processed_tokens": progress.processed_tokens,
            "seconds": seconds,
        },
        evaluation=evaluation,
        card_facts={
            "base_model_name": run.model.base.path.name,
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


def _autocast(model: ModelSetup) -> contextlib.AbstractContextManager:
    if model.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=model.device.type, dtype=model.autocast_dtype)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


Item = TypeVar("Item", TokenizedExample, PreferencePair)


def _split_held_out(
    examples: list[Item], *, fraction: float, seed: int
) -> tuple[list[Item], list[Item]]:
    if len(examples) < 2:
        raise ValueError("a held-out split needs at least 2 examples; give a validation file")
    count = min(len(examples) - 1, max(1, round(fraction * len(examples))))
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    held = set(order[:count])
    return (
        [example for i, example in enumerate(examples) if i not in held],
        [example for i, example in enumerate(examples) if i in held],
    )


def _without_excluded_lines(
    spec: TrainSpec, examples: list[TokenizedExample], training_file: dict[str, Any]
) -> list[TokenizedExample]:
    """The training examples less the excluded lines (held-out lines stay held out, so the
    evaluation is on the set an earlier job with the same seed held out); recorded in the
    training file's entry of data_files."""
    excluded = set(spec.exclude_lines)
    kept = [example for example in examples if example.line_number not in excluded]
    if not kept:
        raise ValueError("excluding the lines leaves no training example")
    training_file["excluded_lines"] = sorted(
        example.line_number for example in examples if example.line_number in excluded
    )
    training_file["excluded_lines_from"] = spec.exclude_lines_from
    return kept


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


def _started_event(run: Run) -> RunStartedEvent:
    return RunStartedEvent(
        run.progress.step,
        total_steps=run.optim.total_steps,
        device=str(run.model.device),
        train_examples=run.data.n_train,
        held_out_examples=run.data.n_held_out,
        resolved_hyperparameters=asdict(run.optim.hyper),
        world_size=run.parallel.world_size if run.parallel is not None else None,
    )


def _resolved_config(run: Run) -> dict[str, Any]:
    model, data, optim = run.model, run.data, run.optim
    config = {
        "spec": run.spec.to_dict(),
        "resolved_hyperparameters": asdict(optim.hyper),
        "schedule": {
            "steps_per_epoch": optim.steps_per_epoch,
            "total_steps": optim.total_steps,
            "warmup_steps": optim.warmup_steps,
        },
        "base_model": {
            "path": str(model.base.path),
            "manifest_sha256": model.base.manifest.manifest_sha256,
            "source": model.base.manifest.source,
        },
        "data_files": data.data_files,
        "held_out": data.held_out_info,
        "too_long_lines": data.too_long_lines,
        "target_modules": model.target_modules,
        "trainable_parameters": sum(p.numel() for p in model.trainable),
        "device": str(model.device),
        "autocast_dtype": str(model.autocast_dtype) if model.autocast_dtype else None,
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
        total_steps=run.optim.total_steps,
        base_model_sha256=run.model.base.manifest.manifest_sha256,
        data_files=run.data.data_files,
        resolved_config=_resolved_config(run),
        trained_tokens=progress.trained_tokens,
        processed_tokens=progress.processed_tokens,
        seconds=seconds,
        device=str(run.model.device),
        checkpoints=list(run.checkpoints),
        final_train_loss=progress.last_loss,
        best_validation_loss=progress.best_validation_loss,
        best_step=progress.best_step,
        stopped_early=progress.stopped_early,
    )
