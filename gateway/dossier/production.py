"""The dossier's "Use in production" section: who called the version, for what, how much
(from the usage table of governed inference, gateway.inference.models.InferenceCall: one
row per call, the version actually served), its re-evaluations after release, and what
it costs: the training run's recorded compute next to serving cost per 1k tokens as
measured on this deployment, and the break-even volume against a larger hosted model's
per-token price.

Serving cost is measured, not estimated: the device time of the version's successful calls
(their latency: the time a request held the backend, an upper bound when calls were
batched together) over the tokens they processed, priced at ``device_hour_price``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import case, func
from sqlmodel import Session, col, select

from gateway.config import Settings
from gateway.inference.models import InferenceCall
from gateway.jobs.models import FineTuningJob
from gateway.reevaluation import service as reevaluations
from gateway.reevaluation.models import Reevaluation
from gateway.registry.models import ModelVersion

BREAK_EVEN_FORMULA = (
    "break_even_tokens = 1000 × training_cost / "
    "(hosted_price_per_1k_tokens − serving_price_per_1k_tokens); "
    "training_cost = training_device_hours × device_hour_price; "
    "serving_price_per_1k_tokens = device_hour_price × (Σ latency_s / 3600) / (Σ tokens / 1000) "
    "over the version's successful calls"
)
# How many callers the section lists (the most active first); the totals count them all.
USERS_SHOWN = 100


# --- the section's schemas ------------------------------------------------------------------


class DossierUsageTotals(BaseModel):
    """Calls, tokens and errors (calls whose outcome was not ``ok``)."""

    calls: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    tokens: int = Field(description="prompt + completion")


class DossierUsagePurpose(DossierUsageTotals):
    """The totals of the calls made for one purpose."""

    purpose: str | None = Field(description="as the caller declared it")


class DossierUsageUser(DossierUsageTotals):
    """The totals of one caller, with their first and last call."""

    principal: str
    first_call_at: int = Field(description="epoch seconds")
    last_call_at: int = Field(description="epoch seconds")


class DossierUsageName(BaseModel):
    """The model name callers asked for when this version served them (another name:
    the version took a share of that model's traffic, a canary)."""

    model_id: str
    calls: int


class DossierUsage(DossierUsageTotals):
    """Every call of /v1/chat/completions this version served."""

    model_version_id: str
    first_call_at: int | None = Field(description="epoch seconds")
    last_call_at: int | None = Field(description="epoch seconds")
    by_purpose: list[DossierUsagePurpose] = Field(description="by purpose, most calls first")
    users: list[DossierUsageUser] = Field(
        description=f"the callers, most calls first (at most {USERS_SHOWN})"
    )
    users_total: int = Field(description="how many distinct callers")
    asked_as: list[DossierUsageName]


class DossierReevaluationMetric(BaseModel):
    name: str
    at_promotion: float
    now: float
    change: float
    degraded: bool


class DossierReevaluationOod(BaseModel):
    at_promotion: float
    now: float
    relative_change: float
    degraded: bool


class DossierReevaluation(BaseModel):
    """A re-evaluation after release, and how its figures compare with promotion's."""

    id: str
    trigger: str = Field(description="on_demand or schedule")
    requested_by: str
    created_at: int = Field(description="epoch seconds")
    status: str
    finished_at: int | None
    degraded: bool | None
    error_code: str | None
    metrics: list[DossierReevaluationMetric]
    ood_probe: DossierReevaluationOod | None


class DossierTrainingCost(BaseModel):
    """The training run's recorded compute, priced."""

    device: str | None = Field(description="where it ran")
    device_hours: float | None
    trained_tokens: int | None
    cost: float | None = Field(description="device_hours × device_hour_price")


class DossierServingCost(BaseModel):
    """Serving as measured on this deployment: the version's successful calls."""

    calls_measured: int
    tokens_measured: int
    device_hours: float = Field(description="Σ latency of those calls, in hours")
    tokens_per_second: float | None
    device_hours_per_1k_tokens: float | None
    price_per_1k_tokens: float | None = Field(
        description="device_hours_per_1k_tokens × device_hour_price"
    )


class DossierCost(BaseModel):
    """Training cost next to serving cost, and the volume after which the tuned model is
    cheaper than the larger hosted model it replaces."""

    device_hour_price: float = Field(description="setting device_hour_price (0: unpriced)")
    price_device: str = Field(description="setting estimate_device: what the price is for")
    training: DossierTrainingCost
    serving: DossierServingCost
    hosted_price_per_1k_tokens: float | None = Field(description="the admin's setting")
    saving_per_1k_tokens: float | None = Field(description="hosted − serving")
    break_even_tokens: float | None = Field(
        description="tokens after which training has paid for itself (null: not computable)"
    )
    break_even_calls: float | None = Field(description="at the measured mean tokens per call")
    note: str | None = Field(description="why break-even is not given, when it is not")
    formula: str


class DossierProduction(BaseModel):
    """Use in production: whether the version is serving, its usage, its re-evaluations
    after release and its cost."""

    status: str
    promoted_at: int | None = Field(description="epoch seconds")
    usage: DossierUsage
    reevaluations: list[DossierReevaluation]
    cost: DossierCost


# --- building it ----------------------------------------------------------------------------


def _served_by(row: ModelVersion) -> Any:
    return col(InferenceCall.model_version_id) == row.id


def _totals_columns() -> list[Any]:
    return [
        func.count(),
        func.coalesce(func.sum(case((col(InferenceCall.outcome) != "ok", 1), else_=0)), 0),
        func.coalesce(func.sum(col(InferenceCall.prompt_tokens)), 0),
        func.coalesce(func.sum(col(InferenceCall.completion_tokens)), 0),
    ]


def _totals(calls: int, errors: int, prompt: int, completion: int) -> dict[str, int]:
    prompt, completion = int(prompt or 0), int(completion or 0)
    return {
        "calls": int(calls or 0),
        "errors": int(errors or 0),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "tokens": prompt + completion,
    }


def usage(session: Session, row: ModelVersion) -> DossierUsage:
    served = _served_by(row)
    first_last = [func.min(col(InferenceCall.created_at)), func.max(col(InferenceCall.created_at))]
    overall = session.execute(select(*_totals_columns(), *first_last).where(served)).one()
    by_purpose = session.execute(
        select(col(InferenceCall.purpose), *_totals_columns())
        .where(served)
        .group_by(col(InferenceCall.purpose))
    ).all()
    users = session.execute(
        select(col(InferenceCall.principal), *_totals_columns(), *first_last)
        .where(served)
        .group_by(col(InferenceCall.principal))
    ).all()
    names = session.execute(
        select(col(InferenceCall.model_id), func.count())
        .where(served)
        .group_by(col(InferenceCall.model_id))
    ).all()
    people = sorted(
        (
            DossierUsageUser(
                principal=principal,
                **_totals(calls, errors, prompt, completion),
                first_call_at=int(first),
                last_call_at=int(last),
            )
            for principal, calls, errors, prompt, completion, first, last in users
        ),
        key=lambda user: (-user.calls, user.principal),
    )
    return DossierUsage(
        model_version_id=row.id,
        **_totals(*overall[:4]),
        first_call_at=overall[4],
        last_call_at=overall[5],
        by_purpose=sorted(
            (
                DossierUsagePurpose(purpose=purpose, **_totals(calls, errors, prompt, completion))
                for purpose, calls, errors, prompt, completion in by_purpose
            ),
            key=lambda entry: (-entry.calls, entry.purpose or ""),
        ),
        users=people[:USERS_SHOWN],
        users_total=len(people),
        asked_as=sorted(
            (DossierUsageName(model_id=name, calls=int(calls)) for name, calls in names),
            key=lambda entry: (-entry.calls, entry.model_id),
        ),
    )


def _reevaluation(item: Reevaluation) -> DossierReevaluation:
    comparison = item.comparison or {}
    ood = comparison.get("ood_probe")
    return DossierReevaluation(
        id=item.id,
        trigger=item.trigger,
        requested_by=item.requested_by,
        created_at=item.created_at,
        status=item.status,
        finished_at=item.finished_at,
        degraded=item.degraded,
        error_code=(item.error or {}).get("code"),
        metrics=[
            DossierReevaluationMetric(
                **{k: m[k] for k in ("name", "at_promotion", "now", "change", "degraded")}
            )
            for m in comparison.get("metrics", [])
        ],
        ood_probe=DossierReevaluationOod(
            **{k: ood[k] for k in ("at_promotion", "now", "relative_change", "degraded")}
        )
        if isinstance(ood, dict)
        else None,
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _training_cost(
    row: ModelVersion, job: FineTuningJob | None, price: float
) -> DossierTrainingCost:
    compute = row.compute or (job.compute if job is not None else None) or {}
    hours = _number(compute.get("device_hours"))
    if hours is None and _number(compute.get("seconds")) is not None:
        hours = float(compute["seconds"]) / 3600
    tokens = compute.get("trained_tokens")
    if not isinstance(tokens, int) and job is not None:
        tokens = job.trained_tokens
    return DossierTrainingCost(
        device=compute.get("device") if isinstance(compute.get("device"), str) else None,
        device_hours=hours,
        trained_tokens=tokens if isinstance(tokens, int) else None,
        cost=hours * price if hours is not None and price > 0 else None,
    )


def _serving_cost(session: Session, row: ModelVersion, price: float) -> DossierServingCost:
    calls, tokens, latency_ms = session.execute(
        select(
            func.count(),
            func.coalesce(
                func.sum(col(InferenceCall.prompt_tokens) + col(InferenceCall.completion_tokens)),
                0,
            ),
            func.coalesce(func.sum(col(InferenceCall.latency_ms)), 0.0),
        ).where(_served_by(row), col(InferenceCall.outcome) == "ok")
    ).one()
    calls, tokens, seconds = int(calls or 0), int(tokens or 0), float(latency_ms or 0) / 1000
    hours = seconds / 3600
    per_1k = hours / (tokens / 1000) if tokens > 0 else None
    return DossierServingCost(
        calls_measured=calls,
        tokens_measured=tokens,
        device_hours=hours,
        tokens_per_second=tokens / seconds if seconds > 0 else None,
        device_hours_per_1k_tokens=per_1k,
        price_per_1k_tokens=per_1k * price if per_1k is not None and price > 0 else None,
    )


def cost(
    session: Session, row: ModelVersion, *, job: FineTuningJob | None, settings: Settings
) -> DossierCost:
    price = settings.device_hour_price
    hosted = settings.hosted_price_per_1k_tokens
    training = _training_cost(row, job, price)
    serving = _serving_cost(session, row, price)
    saving = break_even = calls = None
    note = None
    if price <= 0:
        note = "device_hour_price is not set: training and serving are not priced"
    elif hosted is None:
        note = "hosted_price_per_1k_tokens is not set: there is nothing to break even against"
    elif serving.price_per_1k_tokens is None:
        note = "the version has served no successful call yet: serving cost is not measured"
    elif training.cost is None:
        note = "the training run recorded no compute"
    else:
        saving = hosted - serving.price_per_1k_tokens
        if saving <= 0:
            note = "serving this version costs as much as the hosted model or more: no break-even"
        else:
            break_even = 1000 * training.cost / saving
            calls = break_even / (serving.tokens_measured / serving.calls_measured)
    return DossierCost(
        device_hour_price=price,
        price_device=settings.estimate_device,
        training=training,
        serving=serving,
        hosted_price_per_1k_tokens=hosted,
        saving_per_1k_tokens=saving,
        break_even_tokens=break_even,
        break_even_calls=calls,
        note=note,
        formula=BREAK_EVEN_FORMULA,
    )


def production(
    session: Session, row: ModelVersion, *, job: FineTuningJob | None, settings: Settings
) -> DossierProduction:
    return DossierProduction(
        status=row.status,
        promoted_at=row.promoted_at,
        usage=usage(session, row),
        reevaluations=[_reevaluation(item) for item in reevaluations.for_model(session, row.id)],
        cost=cost(session, row, job=job, settings=settings),
    )
