"""What the dossier quotes from records other code wrote: JSON columns filled by the ingest
library (datasheets, redaction lineage), the job API (LoRA and evaluation settings, the
estimate, the decisions) and the worker (hyperparameters, compute, the evaluation report).

Each is typed where its shape is known, so the OpenAPI schema documents it, and stays open:
a key added since (or an older row's missing one) is neither lost nor invented. A record
serialises exactly the keys it was given, in their order, so the dossier quotes the row
byte for byte whatever version of its writer wrote it.
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidatorFunctionWrapHandler,
    model_serializer,
    model_validator,
)

# An int stays an int and a float a float: pydantic's float would turn 2 into 2.0.
Number = int | float


class Recorded(BaseModel):
    """A record as it was written: typed fields, unknown keys kept, absent keys absent."""

    model_config = ConfigDict(extra="allow")

    _keys: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _remember_keys(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Self:
        record: Self = handler(data)
        if isinstance(data, dict):
            record._keys = tuple(data)
        return record

    # No return annotation on purpose: pydantic would document the annotation (a bare
    # object) instead of the fields in the OpenAPI schema.
    @model_serializer(mode="wrap")
    def _as_written(self, handler: SerializerFunctionWrapHandler):
        written = handler(self)
        return {key: written[key] for key in self._keys if key in written}


# --- the model's own files ---------------------------------------------------------------


class DossierAdapterFile(Recorded):
    """One file of the adapter directory, hashed by the gateway at registration."""

    relative_path: str | None = None
    sha256: str | None = None
    bytes: int | None = None


# --- the data: datasheets and redaction (the ingest library's) ----------------------------


class DossierTokenStats(Recorded):
    """Tokens per example, counted with the datasheet's tokenizer."""

    total: int | None = None
    min: int | None = None
    mean: Number | None = None
    p50: int | None = None
    p95: int | None = None
    max: int | None = None


class DossierDuplicatePair(Recorded):
    """A line that repeats an earlier one, exactly or nearly."""

    line: int | None = None
    of_line: int | None = None
    similarity: Number | None = None


class DossierDuplicates(Recorded):
    """Duplicate lines in the file; near duplicates name the similarity threshold."""

    threshold: Number | None = None
    count: int | None = None
    pairs: list[DossierDuplicatePair] | None = None


class DossierShortAnswers(Recorded):
    """Examples whose answer is shorter than under_chars: count and first line numbers."""

    under_chars: int | None = None
    count: int | None = None
    lines: list[int] | None = None


class DossierPiiKind(Recorded):
    """Findings of one PII kind: how many, on how many lines, and the first line numbers."""

    findings: int | None = None
    lines: int | None = None
    line_numbers: list[int] | None = None


class DossierPiiSummary(Recorded):
    """What the PII scan found (counts and line numbers, never a value) and the action."""

    action: str | None = None
    recogniser_set: str | None = None
    findings: int | None = None
    lines: int | None = None
    by_type: dict[str, DossierPiiKind] | None = None


class DossierFault(Recorded):
    """A line the validation refused, with the machine-readable code."""

    line: int | None = None
    code: str | None = None
    message: str | None = None


class DossierFaults(Recorded):
    """How many faults validation found, and the first ones."""

    count: int | None = None
    shown: list[DossierFault] | None = None


class DossierConflictGroup(Recorded):
    """Lines whose prompts are the same or nearly (similarity: the lowest that joined the
    group) but whose answers differ; suspects are the lines not giving the majority answer."""

    lines: list[int] | None = None
    size: int | None = None
    answers: int | None = None
    similarity: Number | None = None
    majority_lines: int | None = None
    suspect_lines: list[int] | None = None


class DossierConflicts(Recorded):
    """Conflicting answers at upload (ingest.conflicts): groups, lines, rate."""

    threshold: Number | None = None
    examples: int | None = None
    groups: int | None = None
    lines: int | None = None
    rate: Number | None = None
    suspect_lines: int | None = None
    shown: list[DossierConflictGroup] | None = None


class DossierStructureField(Recorded):
    """A key of the inferred schema: its type, how many answers have it, and for a
    low-cardinality field its values with their counts."""

    type: str | None = None
    present: int | None = None
    values: dict[str, int] | None = None


class DossierStructureDeviation(Recorded):
    """A line that deviates from the schema, and why (missing_key, extra_key, wrong_type,
    unknown_value with the common value it resembles, not_json)."""

    line: int | None = None
    reason: str | None = None
    key: str | None = None
    type: str | None = None
    expected: str | None = None
    value: str | int | bool | None = None
    resembles: str | None = None


class DossierStructureDeviations(Recorded):
    by_reason: dict[str, int] | None = None
    shown: list[DossierStructureDeviation] | None = None


class DossierStructure(Recorded):
    """Structured answers at upload (ingest.structure): whether most answers are JSON
    objects, the schema they share and the lines that deviate."""

    answers: int | None = None
    json_objects: int | None = None
    detected: bool | None = None
    fields: dict[str, DossierStructureField] | None = None
    deviations: DossierStructureDeviations | None = None
    complete: bool | None = None


class DossierDatasheet(Recorded):
    """The file version's datasheet (ingest.report.Datasheet, schema tunegate.datasheet/2):
    counts and line numbers only, never an example's text or a PII value."""

    # "schema" would shadow BaseModel.schema; dumps use the alias (FastAPI's do)
    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    schema_: str | None = Field(None, alias="schema")
    sha256: str | None = None
    bytes: int | None = None
    lines: int | None = None
    status: str | None = None
    format: str | None = None
    examples: int | None = None
    tokenizer: str | None = None
    tokens: DossierTokenStats | None = None
    roles: dict[str, int] | None = None
    exact_duplicates: DossierDuplicates | None = None
    near_duplicates: DossierDuplicates | None = None
    short_answers: DossierShortAnswers | None = None
    pii: DossierPiiSummary | None = None
    faults: DossierFaults | None = None
    conflicts: DossierConflicts | None = None  # datasheet/2
    structure: DossierStructure | None = None  # datasheet/2


class DossierRedactionSettings(Recorded):
    """How the redaction was done: the action, the placeholder, the kinds it replaced."""

    pii_action: str | None = None
    placeholder: str | None = None
    kinds: list[str] | None = None


class DossierRedaction(Recorded):
    """The redaction lineage of a file: the upload's hash -> the trained-on derivative's."""

    input_sha256: str | None = None
    output_sha256: str | None = None
    recogniser_set: str | None = None
    settings: DossierRedactionSettings | None = None
    redacted_lines: int | None = None
    findings: dict[str, int] | None = None


# --- training: settings, hyperparameters, compute -----------------------------------------


class DossierLora(Recorded):
    """The adapter's settings: as the job asked (r, alpha, dropout, target_modules), or as
    the trainer ran them (with use_rslora, use_dora)."""

    r: int | None = None
    alpha: int | None = None
    dropout: Number | None = None
    target_modules: list[str] | None = None
    use_rslora: bool | None = None
    use_dora: bool | None = None


class DossierSchedule(Recorded):
    """The optimiser steps the run planned."""

    steps_per_epoch: int | None = None
    total_steps: int | None = None
    warmup_steps: int | None = None


class DossierHyperparameters(Recorded):
    """What the run resolved (each "auto" decided, decided_by says how) and the spec fields
    that shape what is learned."""

    n_epochs: int | None = None
    batch_size: int | None = None
    learning_rate_multiplier: Number | None = None
    learning_rate: Number | None = None
    decided_by: dict[str, str] | None = None
    lora: DossierLora | None = None
    base_learning_rate: Number | None = None
    lr_scheduler: str | None = None
    warmup_ratio: Number | None = None
    weight_decay: Number | None = None
    max_grad_norm: Number | None = None
    max_seq_len: int | None = None
    micro_batch_tokens: int | None = None
    packing: bool | None = None
    max_steps: int | None = None
    eval_every_steps: int | None = None
    early_stopping_patience: int | None = None
    init_adapter_dir: str | None = None
    target_modules: list[str] | None = None
    trainable_parameters: int | None = None
    schedule: DossierSchedule | None = None


class DossierEstimate(Recorded):
    """The device time estimated before the job ran (tokens x epochs -> FLOPs -> seconds)."""

    training_tokens: int | None = None
    n_epochs: int | None = None
    tokens_processed: int | None = None
    parameters: int | None = None
    flops: Number | None = None
    device: str | None = None
    device_flops: Number | None = None
    mfu: Number | None = None
    seconds: Number | None = None
    device_hours: Number | None = None
    method: str | None = None


class DossierCompute(Recorded):
    """What the run used, beside its estimate (same FLOPs method, so the two compare)."""

    seconds: Number | None = None
    device_hours: Number | None = None
    flops: Number | None = None
    flops_per_second: Number | None = None
    device: str | None = None
    steps_completed: int | None = None
    total_steps: int | None = None
    trained_tokens: int | None = None
    processed_tokens: int | None = None
    attempts: int | None = None
    torch_threads: int | None = None
    estimate: DossierEstimate | None = None
    estimated_device_seconds: Number | None = None
    resumed: bool | None = None


# --- evaluation ---------------------------------------------------------------------------


class DossierEvaluationSettings(Recorded):
    """How the job asked to be evaluated, and the verdict's thresholds."""

    enabled: bool | None = None
    min_exact_match_margin: Number | None = None
    max_ood_loss_increase: Number | None = None
    held_out_fraction: Number | None = None
    max_generation_examples: int | None = None
    max_new_tokens: int | None = None
    generation_batch_size: int | None = None
    few_shot_examples: int | None = None


class DossierSystemMetrics(Recorded):
    """One system's scores on the held-out examples."""

    loss: Number | None = None
    perplexity: Number | None = None
    exact_match: Number | None = None
    token_f1: Number | None = None
    n_generated: int | None = None


class DossierOodProbe(Recorded):
    """Loss on general text before and after tuning: what the tuning cost elsewhere."""

    text_file: str | None = None
    text_sha256: str | None = None
    tokens_scored: int | None = None
    loss_before: Number | None = None
    loss_after: Number | None = None
    relative_change: Number | None = None


class DossierEvaluationSample(Recorded):
    """A held-out example: the reference answer and each system's answer."""

    line_number: int | None = None
    reference: str | None = None
    base_zero_shot: str | None = None
    base_few_shot: str | None = None
    tuned: str | None = None


class DossierCheck(Recorded):
    """One check of the verdict: its value against its threshold."""

    name: str | None = None
    passed: bool | None = None
    value: Number | None = None
    threshold: Number | None = None


class DossierVerdict(Recorded):
    """Whether every check passed, and the checks."""

    passed: bool | None = None
    checks: list[DossierCheck] | None = None


class DossierEvaluationReport(Recorded):
    """The run's evaluation against the baselines (trainer.evaluate): the systems by name
    (base_zero_shot, base_few_shot, tuned), the out-of-distribution probe, a few samples and
    the verdict."""

    held_out_examples: int | None = None
    generation_examples: int | None = None
    few_shot_examples: int | None = None
    systems: dict[str, DossierSystemMetrics] | None = None
    ood_probe: DossierOodProbe | None = None
    samples: list[DossierEvaluationSample] | None = None
    verdict: DossierVerdict | None = None


# --- approvals ----------------------------------------------------------------------------


class DossierDecision(Recorded):
    """One decision the job passed: a policy decision (kind policy: object, action, allowed,
    the rule and the policy version that decided) or a gate (kind gate: gate, passed, and
    the figures it decided on, gateway.jobs.gates)."""

    kind: str | None = None
    # kind policy
    object: str | None = None
    action: str | None = None
    allowed: bool | None = None
    policy_version: str | None = None
    rule: list[str] | None = None
    # kind gate, and each gate's figures
    gate: str | None = None
    passed: bool | None = None
    base_model: str | None = None  # model
    file_id: str | None = None  # file
    data_source: str | None = None  # data_source_approved, purpose
    approved_by: str | None = None  # data_source_approved
    approval_policy_version: str | None = None  # data_source_approved
    purpose: str | None = None  # purpose
    examples: int | None = None  # min_examples
    minimum: int | None = None  # min_examples
    overlapping_lines: int | None = None  # train_validation_overlap
    max_overlapping_lines: int | None = None  # train_validation_overlap
    active_jobs: int | None = None  # quota
    device_hours_used: Number | None = None  # quota
