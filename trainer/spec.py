"""What a training run is asked to do: plain dataclasses, each field with its help text.

The gateway builds a `TrainSpec` from an OpenAI-style job request, sends it to a worker as
JSON (`to_dict` / `from_dict`), and the worker passes it to `trainer.recipe.train`. Every
"auto" hyperparameter is resolved once, from the size of the training set, by
`resolve_hyperparameters`; the resolved values are what the run uses and records.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

AUTO = "auto"

LR_SCHEDULERS = ("cosine", "linear")
SUPERVISED, DPO = "supervised", "dpo"
METHODS = (SUPERVISED, DPO)
# OpenAI's DPO default: beta = 0.1 when "auto".
AUTO_DPO_BETA = 0.1
DEVICES = ("auto", "cpu", "cuda")

# The demo set (500 examples) gets 3 epochs; smaller sets get more passes, larger ones fewer.
AUTO_EPOCHS_TARGET_EXAMPLES_SEEN = 1500
AUTO_EPOCHS_MIN, AUTO_EPOCHS_MAX = 1, 10
# Roughly 2% of the training set per optimizer step, as a power of two.
AUTO_BATCH_FRACTION = 1 / 50
AUTO_BATCH_MAX = 32
# Learning rate scales with the square root of the batch size around this reference batch.
AUTO_LR_REFERENCE_BATCH = 8
AUTO_LR_MULTIPLIER_MIN, AUTO_LR_MULTIPLIER_MAX = 0.5, 2.0


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class Hyperparameters:
    """OpenAI fine-tuning hyperparameters; each may be "auto"."""

    n_epochs: int | Literal["auto"] = field(
        default=AUTO,
        metadata=_help(
            "Passes over the training set. 'auto' picks enough passes to show the model about "
            f"{AUTO_EPOCHS_TARGET_EXAMPLES_SEEN} examples, between {AUTO_EPOCHS_MIN} and "
            f"{AUTO_EPOCHS_MAX} epochs."
        ),
    )
    batch_size: int | Literal["auto"] = field(
        default=AUTO,
        metadata=_help(
            "Training examples per optimizer step. 'auto' uses about 2% of the training set, "
            f"rounded down to a power of two, between 1 and {AUTO_BATCH_MAX}."
        ),
    )
    learning_rate_multiplier: float | Literal["auto"] = field(
        default=AUTO,
        metadata=_help(
            "Factor applied to TrainSpec.base_learning_rate. 'auto' scales with "
            f"sqrt(batch_size / {AUTO_LR_REFERENCE_BATCH}), clamped to "
            f"[{AUTO_LR_MULTIPLIER_MIN}, {AUTO_LR_MULTIPLIER_MAX}]."
        ),
    )

    def __post_init__(self) -> None:
        for name in ("n_epochs", "batch_size"):
            value = getattr(self, name)
            if value != AUTO and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise ValueError(f"{name} must be 'auto' or a positive integer, got {value!r}")
        multiplier = self.learning_rate_multiplier
        if multiplier != AUTO and (
            not isinstance(multiplier, int | float)
            or isinstance(multiplier, bool)
            or multiplier <= 0
        ):
            raise ValueError(
                f"learning_rate_multiplier must be 'auto' or a positive number, got {multiplier!r}"
            )


@dataclass
class LoraSpec:
    """The LoRA adapter: what peft's LoraConfig receives."""

    r: int = field(default=16, metadata=_help("Rank of the low-rank update matrices."))
    alpha: int = field(
        default=32, metadata=_help("Scaling numerator: the update is scaled by alpha / r.")
    )
    dropout: float = field(
        default=0.0,
        metadata=_help(
            "Dropout on the adapter's input during training (0: none, as in torchtune and peft)."
        ),
    )
    target_modules: list[str] | None = field(
        default=None,
        metadata=_help(
            "Names of the linear layers that get an adapter. None: peft's 'all-linear', every "
            "linear layer but the output head (for Llama the q/k/v/o and gate/up/down "
            "projections of the attention and MLP blocks)."
        ),
    )
    use_rslora: bool = field(
        default=False,
        metadata=_help("Rank-stabilised LoRA: scale by alpha / sqrt(r) instead of alpha / r."),
    )
    use_dora: bool = field(
        default=False,
        metadata=_help("Weight-decomposed LoRA (DoRA): learn magnitude and direction apart."),
    )

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0:
            raise ValueError("LoRA r must be >= 1 and alpha > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("LoRA dropout must lie in [0, 1)")


@dataclass
class DpoSpec:
    """Direct preference optimisation (method "dpo"): the sigmoid loss of Rafailov et al."""

    beta: float | Literal["auto"] = field(
        default=AUTO,
        metadata=_help(
            "How far the tuned model may move from the reference (the base model with the "
            f"adapter disabled): larger stays closer. 'auto' is {AUTO_DPO_BETA}."
        ),
    )

    def __post_init__(self) -> None:
        beta = self.beta
        if beta != AUTO and (
            not isinstance(beta, int | float) or isinstance(beta, bool) or not 0 < beta <= 2
        ):
            raise ValueError(f"beta must be 'auto' or a number in (0, 2], got {beta!r}")

    @property
    def resolved_beta(self) -> float:
        return AUTO_DPO_BETA if self.beta == AUTO else float(self.beta)


@dataclass
class EvalSpec:
    """Evaluation against baselines on a held-out set, and the thresholds of the verdict."""

    enabled: bool = field(
        default=True,
        metadata=_help("Run the baseline comparison and OOD probe after training."),
    )
    held_out_fraction: float = field(
        default=0.1,
        metadata=_help(
            "When no validation file is given: the share of the training file held out "
            "(a seeded split, recorded in the result) for validation loss and evaluation."
        ),
    )
    max_generation_examples: int | None = field(
        default=None,
        metadata=_help("Upper bound on held-out examples used for generation metrics (None: all)."),
    )
    few_shot_examples: int = field(
        default=3,
        metadata=_help("Training examples shown in the few-shot (prompt-engineering) baseline."),
    )
    max_new_tokens: int = field(
        default=128, metadata=_help("Upper bound on generated tokens per answer (greedy).")
    )
    generation_batch_size: int = field(
        default=8, metadata=_help("Prompts decoded together during evaluation.")
    )
    ood_text_file: str | None = field(
        default=None,
        metadata=_help(
            "Plain general text for the out-of-distribution probe. None: the file committed "
            "with the trainer (trainer/data/ood_general.txt)."
        ),
    )
    ood_max_tokens: int = field(
        default=4096, metadata=_help("Tokens of the OOD text scored before and after tuning.")
    )
    min_exact_match_margin: float = field(
        default=0.05,
        metadata=_help(
            "Verdict: the tuned model's exact match must exceed the best baseline by this much."
        ),
    )
    max_ood_loss_increase: float = field(
        default=0.10,
        metadata=_help(
            "Verdict: the OOD loss may rise by at most this relative amount (0.10 = 10%)."
        ),
    )
    min_preference_accuracy_margin: float = field(
        default=0.05,
        metadata=_help(
            "Verdict of a DPO run: the tuned model's preference accuracy on the held-out "
            "pairs must exceed the base model's by this much."
        ),
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.held_out_fraction < 1.0:
            raise ValueError("held_out_fraction must lie in (0, 1)")
        if self.few_shot_examples < 0 or self.max_new_tokens < 1 or self.generation_batch_size < 1:
            raise ValueError("few_shot_examples >= 0, max_new_tokens >= 1, batch size >= 1")


@dataclass
class MislabelSpec:
    """Suspected mislabels (trainer.mislabels): after evaluation, every training example is
    scored under the tuned adapter and the outliers are listed for a data owner's review."""

    enabled: bool = field(
        default=True,
        metadata=_help(
            "Score every training example after training (one forward pass over the training "
            "set, plus greedy answers for a few structured candidates) and list the suspects."
        ),
    )
    z_threshold: float = field(
        default=3.5,
        metadata=_help(
            "Flag an example whose mean assistant-token loss has a robust z-score (median and "
            "MAD of its length bucket, Iglewicz and Hoaglin) above this."
        ),
    )
    margin_nats: float = field(
        default=6.0,
        metadata=_help(
            "For a JSON-object answer, each field's cost (its tokens' summed loss, in nats) is "
            "read off the same pass; a line with a field costing more than this is answered "
            "greedily by the tuned model, and flagged when the answer gives that field another "
            "value that the model finds at least this many nats likelier than the label's "
            "(6 nats: about 400 times)."
        ),
    )
    candidate_z: float = field(
        default=1.5,
        metadata=_help(
            "JSON-object answers whose fields cannot be found among the tokens: those with a "
            "robust z-score above this are answered greedily by the tuned model and flagged "
            "when a field disagrees with the label."
        ),
    )
    min_bucket_examples: int = field(
        default=16,
        metadata=_help(
            "Length buckets (by assistant tokens) hold at least this many examples; fewer "
            "examples than twice this make one bucket."
        ),
    )
    max_buckets: int = field(default=4, metadata=_help("At most this many length buckets."))
    max_structured_checks: int = field(
        default=64,
        metadata=_help(
            "Greedy answers generated for the structured check, highest z-scores first."
        ),
    )
    max_new_tokens: int = field(
        default=128, metadata=_help("Upper bound on tokens per greedy answer of the check.")
    )

    def __post_init__(self) -> None:
        if self.z_threshold <= 0 or self.candidate_z < 0 or self.margin_nats <= 0:
            raise ValueError("z_threshold and margin_nats must be > 0 and candidate_z >= 0")
        if self.min_bucket_examples < 2 or self.max_buckets < 1:
            raise ValueError("min_bucket_examples must be >= 2 and max_buckets >= 1")
        if self.max_structured_checks < 0 or self.max_new_tokens < 1:
            raise ValueError("max_structured_checks >= 0 and max_new_tokens >= 1")


@dataclass
class TrainSpec:
    """One LoRA fine-tuning run."""

    base_model_dir: str = field(
        metadata=_help("Base model directory with a tunegate manifest (see trainer.base_models).")
    )
    training_file: str = field(
        metadata=_help(
            "JSONL: chat ({'messages': [...]}) or prompt/completion examples; for method "
            "'dpo', preference examples ({'input', 'preferred_output', 'non_preferred_output'})."
        )
    )
    output_dir: str = field(
        metadata=_help("Where checkpoints and, on success, the final artifacts are written.")
    )
    validation_file: str | None = field(
        default=None,
        metadata=_help("JSONL held-out set; None: a seeded split of the training file."),
    )
    hyperparameters: Hyperparameters = field(
        default_factory=Hyperparameters, metadata=_help("OpenAI-style hyperparameters.")
    )
    lora: LoraSpec = field(default_factory=LoraSpec, metadata=_help("The adapter."))
    evaluation: EvalSpec = field(default_factory=EvalSpec, metadata=_help("Evaluation."))
    method: str = field(
        default=SUPERVISED,
        metadata=_help(
            "'supervised' (cross-entropy on the assistant turns) or 'dpo' (preference pairs)."
        ),
    )
    dpo: DpoSpec = field(default_factory=DpoSpec, metadata=_help("DPO settings (method 'dpo')."))
    mislabels: MislabelSpec = field(
        default_factory=MislabelSpec,
        metadata=_help("Suspected mislabels: score the training set after training."),
    )
    exclude_lines: list[int] = field(
        default_factory=list,
        metadata=_help(
            "Line numbers of the training file left out of training (confirmed-wrong lines "
            "of an earlier job); a held-out split is drawn before they are left out, so it "
            "is the split the earlier job drew with the same seed."
        ),
    )
    exclude_lines_from: str | None = field(
        default=None,
        metadata=_help("The job whose reviews confirmed exclude_lines wrong (for the lineage)."),
    )
    seed: int = field(
        default=42,
        metadata=_help("Seeds data order, adapter initialisation, dropout and the held-out split."),
    )
    base_learning_rate: float = field(
        default=2e-4, metadata=_help("Peak learning rate before the multiplier is applied.")
    )
    lr_scheduler: str = field(
        default="cosine",
        metadata=_help("Decay after warm-up: 'cosine' or 'linear' (both reach zero at the end)."),
    )
    warmup_ratio: float = field(
        default=0.05, metadata=_help("Share of all optimizer steps spent warming up linearly.")
    )
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay."))
    max_grad_norm: float = field(
        default=1.0, metadata=_help("Gradients are clipped to this global L2 norm.")
    )
    max_seq_len: int = field(
        default=2048,
        metadata=_help(
            "Longest example in tokens; longer examples are left out and counted in the result."
        ),
    )
    micro_batch_tokens: int = field(
        default=4096,
        metadata=_help(
            "Tokens per forward pass. A step whose examples hold more tokens is split into "
            "micro-batches whose gradients are accumulated (the loss stays a mean over all "
            "assistant tokens of the step)."
        ),
    )
    packing: bool = field(
        default=True,
        metadata=_help(
            "Concatenate examples into one padding-free row per micro-batch, with attention "
            "and positions restarted per example. False: pad each micro-batch to its longest."
        ),
    )
    eval_every_steps: int | None = field(
        default=None,
        metadata=_help("Validation loss every N optimizer steps; None: at the end of each epoch."),
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata=_help(
            "Stop after this many validation rounds without a better loss; the best adapter "
            "is the one kept. None: never stop early (the best adapter is still kept)."
        ),
    )
    checkpoint_every_steps: int | None = field(
        default=None,
        metadata=_help("Write an adapter checkpoint (with optimizer state) every N steps."),
    )
    checkpoint_every_epoch: bool = field(
        default=False,
        metadata=_help(
            "Write a checkpoint at the end of every epoch, and once more when training ends "
            "(early stop, max_steps) if that step has none: what a resume after the training "
            "loop, or a pause during evaluation, starts from."
        ),
    )
    checkpoint_every_minutes: float | None = field(
        default=None,
        metadata=_help(
            "Also write a checkpoint once this many minutes have passed since the last one "
            "(checked between optimizer steps). None: no time-based checkpoints."
        ),
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata=_help("A checkpoint directory of an earlier run of the same spec to resume."),
    )
    max_steps: int | None = field(
        default=None,
        metadata=_help("Stop after this many optimizer steps (the schedule is sized for it)."),
    )
    init_adapter_dir: str | None = field(
        default=None,
        metadata=_help(
            "Start from an earlier run's LoRA weights instead of a fresh adapter: a directory "
            "with adapter_config.json and adapter_model.safetensors (or a final artifact "
            "directory holding one under adapter/). Its LoRA configuration (r, alpha, target "
            "modules, rslora, dora) must equal this spec's."
        ),
    )
    device: str = field(
        default="auto",
        metadata=_help(
            "'auto' (CUDA with bf16 autocast when available, else CPU fp32), 'cpu', 'cuda'."
        ),
    )
    export_merged: bool = field(
        default=False,
        metadata=_help(
            "Also write full merged weights (merge_and_unload), checked against the adapter."
        ),
    )
    merged_agreement_tolerance: float = field(
        default=1e-3,
        metadata=_help("Largest logit difference allowed between merged and adapter outputs."),
    )

    def __post_init__(self) -> None:
        for name, kind in (
            ("hyperparameters", Hyperparameters),
            ("lora", LoraSpec),
            ("evaluation", EvalSpec),
            ("dpo", DpoSpec),
            ("mislabels", MislabelSpec),
        ):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, kind(**value))
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}")
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.exclude_lines):
            raise ValueError("exclude_lines must be line numbers (integers >= 1)")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"lr_scheduler must be one of {LR_SCHEDULERS}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError("warmup_ratio must lie in [0, 1)")
        if self.base_learning_rate <= 0 or self.max_grad_norm <= 0:
            raise ValueError("base_learning_rate and max_grad_norm must be positive")
        if self.max_seq_len < 2 or self.micro_batch_tokens < self.max_seq_len:
            raise ValueError("max_seq_len must be >= 2 and micro_batch_tokens >= max_seq_len")
        for name in (
            "eval_every_steps",
            "early_stopping_patience",
            "checkpoint_every_steps",
            "max_steps",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be None or >= 1")
        if self.checkpoint_every_minutes is not None and not self.checkpoint_every_minutes > 0:
            raise ValueError("checkpoint_every_minutes must be None or > 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown TrainSpec fields: {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class ResolvedHyperparameters:
    """The concrete values a run used, and how each "auto" was decided."""

    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    learning_rate: float
    decided_by: dict[str, str]


def _power_of_two_at_most(value: float) -> int:
    return 1 << max(0, math.floor(math.log2(max(value, 1.0))))


def resolve_hyperparameters(
    hyperparameters: Hyperparameters, *, n_training_examples: int, base_learning_rate: float
) -> ResolvedHyperparameters:
    if n_training_examples < 1:
        raise ValueError("cannot resolve hyperparameters for an empty training set")
    decided_by: dict[str, str] = {}

    if hyperparameters.n_epochs == AUTO:
        n_epochs = math.ceil(AUTO_EPOCHS_TARGET_EXAMPLES_SEEN / n_training_examples)
        n_epochs = min(AUTO_EPOCHS_MAX, max(AUTO_EPOCHS_MIN, n_epochs))
        decided_by["n_epochs"] = (
            f"auto: ceil({AUTO_EPOCHS_TARGET_EXAMPLES_SEEN} / {n_training_examples} examples) "
            f"clamped to [{AUTO_EPOCHS_MIN}, {AUTO_EPOCHS_MAX}]"
        )
    else:
        n_epochs = int(hyperparameters.n_epochs)
        decided_by["n_epochs"] = "given"

    if hyperparameters.batch_size == AUTO:
        batch_size = min(
            AUTO_BATCH_MAX, _power_of_two_at_most(n_training_examples * AUTO_BATCH_FRACTION)
        )
        decided_by["batch_size"] = (
            f"auto: power of two <= {n_training_examples} examples * {AUTO_BATCH_FRACTION:g}, "
            f"at most {AUTO_BATCH_MAX}"
        )
    else:
        batch_size = int(hyperparameters.batch_size)
        decided_by["batch_size"] = "given"

    if hyperparameters.learning_rate_multiplier == AUTO:
        multiplier = math.sqrt(batch_size / AUTO_LR_REFERENCE_BATCH)
        multiplier = min(AUTO_LR_MULTIPLIER_MAX, max(AUTO_LR_MULTIPLIER_MIN, multiplier))
        decided_by["learning_rate_multiplier"] = (
            f"auto: sqrt({batch_size} / {AUTO_LR_REFERENCE_BATCH}) clamped to "
            f"[{AUTO_LR_MULTIPLIER_MIN}, {AUTO_LR_MULTIPLIER_MAX}]"
        )
    else:
        multiplier = float(hyperparameters.learning_rate_multiplier)
        decided_by["learning_rate_multiplier"] = "given"

    return ResolvedHyperparameters(
        n_epochs=n_epochs,
        batch_size=batch_size,
        learning_rate_multiplier=multiplier,
        learning_rate=base_learning_rate * multiplier,
        decided_by=decided_by,
    )
