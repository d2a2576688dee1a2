from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from policies.vocabulary import PLATFORM_TENANT

# Known only so that prod start-up can refuse it; dev tokens are signed with it.
DEV_JWT_SECRET = "tunegate-dev-secret-do-not-use-in-production!"  # noqa: S105
MIN_SECRET_BYTES = 32
# EU AI Act Art. 19(1), 26(6): logs kept at least six months (gateway.retention)
MIN_AUDIT_RETENTION_DAYS = 183
# Tenant names as the platform registers them and compares them: one spelling, so `ACME`
# is never `acme` (gateway.security refuses a token naming an unregistered one).
CANONICAL_TENANT = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class InsecureSettingsError(ValueError):
    """Raised at start-up when a production configuration is unsafe."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNEGATE_", extra="ignore")

    database_url: str = Field(
        "sqlite:///./var/tunegate.db", description="SQLAlchemy URL (sqlite or postgresql+psycopg)"
    )
    env: Literal["dev", "prod"] = Field("dev", description="dev relaxes secrets; prod refuses them")
    jwt_secret: str | None = Field(None, description="HS256 secret, at least 32 bytes in prod")
    jwt_issuer: str = Field("tunegate", description="required iss claim (exact match)")
    jwt_audience: str = Field("tunegate", description="required aud claim")
    jwks_url: str | None = Field(None, description="OIDC JWKS URL; enables RS256/ES256 tokens")
    jwks_min_refresh_seconds: float = Field(
        60.0, ge=0, description="the key set is fetched at most this often (unknown kid, expiry)"
    )
    jwks_cache_seconds: float = Field(
        300.0, gt=0, description="how long a fetched key set is trusted before refetching"
    )
    tenants: list[str] = Field(
        default_factory=lambda: ["default"],
        description="the registered tenants (JSON list of canonical names: lowercase letters, "
        "digits and . _ -, starting with a letter or digit, at most 64): a token whose tenant "
        "claim is none of them, nor the platform domain `platform`, is refused (401 "
        "unknown_tenant)",
    )

    @field_validator("tenants")
    @classmethod
    def _tenants_are_canonical(cls, value: list[str]) -> list[str]:
        for name in value:
            if not CANONICAL_TENANT.fullmatch(name):
                raise ValueError(
                    f"tenants: {name!r} is not a canonical tenant name "
                    f"({CANONICAL_TENANT.pattern}): write it in lowercase, without spaces"
                )
            if name == PLATFORM_TENANT:
                raise ValueError(
                    f"tenants: {PLATFORM_TENANT!r} is the platform domain, always known: it "
                    "cannot be a tenant"
                )
        return list(dict.fromkeys(value))

    oidc_issuer: str | None = Field(
        None, description="OIDC issuer of the console's sign-in (authorization code + PKCE)"
    )
    oidc_client_id: str | None = Field(None, description="the console's OIDC client id")
    oidc_client_secret: str | None = Field(
        None, description="the console's OIDC client secret (none: a public client, PKCE only)"
    )
    oidc_scope: str = Field("openid profile email", description="scopes the console asks for")
    oidc_redirect_url: str | None = Field(
        None,
        description="the callback URL registered with the provider "
        "(default: <this gateway>/console/oidc/callback)",
    )
    console_token_sign_in: bool = Field(
        False,
        description="let the console's sign-in form take a bearer token outside dev "
        "(always on in dev)",
    )
    max_concurrent_requests: int = Field(
        64,
        ge=1,
        le=10_000,
        description="requests handled at once (the rest queue); the thread pool gets more",
    )
    max_token_bytes: int = Field(8192, description="longer bearer tokens are refused unread")
    max_request_bytes: int = Field(
        1 << 20, ge=1024, description="larger JSON request bodies get 413 before being read"
    )
    artifact_dir: Path = Field(Path("./var/artifacts"), description="content-addressed storage")
    model_import_roots: list[Path] = Field(
        default_factory=list,
        description="directories base models may be imported from (JSON list); empty: only "
        "packaged models",
    )
    provider_credential_dirs: list[Path] | None = Field(
        None,
        description="directories a provider's `file:` credential may lie in, directly (JSON "
        "list; the operator's to fill); default: `credentials` beside artifact_dir (e.g. "
        "./var/credentials); []: no file credentials",
    )
    max_upload_bytes: int = Field(
        1 << 30, ge=1, description="a training file over this size gets 413 as it streams in"
    )
    max_upload_line_bytes: int = Field(
        1 << 20, ge=1024, description="a JSONL line over this size is a fault in the report"
    )
    upload_min_free_bytes: int = Field(
        256 << 20, ge=0, description="uploads are refused (507) before free space drops below"
    )
    ingest_workers: int = Field(
        2,
        ge=0,
        le=64,
        description="processes scanning uploads (0: in the request thread); started lazily",
    )
    audit_signing_key: Path | None = Field(
        None, description="Ed25519 private key (PEM); dev generates one under artifact_dir"
    )
    audit_checkpoint_every: int = Field(
        1000, ge=1, description="sign a checkpoint every N audit events"
    )
    # --- erasure search in the background (gateway.erasure.search) ---
    erasure_inline_search_bytes: int = Field(
        64 << 20,
        ge=0,
        description="a tenant's stored content up to this size is searched inside the "
        "request that files an erasure; above it the search runs in the background",
    )
    erasure_search_poll_seconds: float = Field(
        1.0, gt=0, description="how often an idle searcher looks for a search to run"
    )
    erasure_search_lease_seconds: float = Field(
        30.0,
        gt=0,
        description="a searcher that stops renewing its lease this long (a dead process) "
        "loses the search to another, which resumes it",
    )
    # --- C2SP checkpoints (issue 16 §1: audit.note, GET /v1/audit/checkpoint) ---
    audit_origin: str = Field(
        "tunegate.example.com/audit/global",
        min_length=1,
        max_length=256,
        pattern=r"^[^\s+]+$",
        description="origin line of the C2SP checkpoints (a schema-less URL-like name, no "
        "spaces or '+'), e.g. tunegate.example.com/audit/<tenant or global>",
    )
    audit_key_name: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        pattern=r"^[^\s+]+$",
        description="signed-note key name of the checkpoint signatures; default: the origin",
    )
    # --- witnesses (issue 16 §2: gateway.witness) ---
    audit_witnesses: list[str] = Field(
        default_factory=list,
        description="C2SP tlog witnesses every new checkpoint is pushed to: 'URL VKEY' each "
        "(JSON list; VKEY from `tunegate witness vkey`)",
    )
    audit_witness_quorum: int = Field(
        0,
        ge=0,
        description="witnesses that must be in good standing for /readyz (K of N); the "
        "verifier's --witness-quorum is its own",
    )
    audit_witness_push_seconds: float = Field(
        2.0, gt=0, description="how often new checkpoints are offered to the witnesses"
    )

    @model_validator(mode="after")
    def _quorum_within_witnesses(self) -> Settings:
        if self.audit_witness_quorum > len(self.audit_witnesses):
            raise ValueError(
                f"audit_witness_quorum={self.audit_witness_quorum} is more than the "
                f"{len(self.audit_witnesses)} audit_witnesses configured: K of N needs K <= N"
            )
        return self

    # --- retention (issue 16 §3: gateway.retention) ---
    audit_retention_days: int = Field(
        3650,
        description="how long audit events are kept (they are never deleted by the product; "
        "archive old ranges with their checkpoints). At least 183 days: EU AI Act Art. 19(1) "
        "and 26(6) ask for logs to be kept at least six months",
    )
    retention_warn_days: int = Field(
        7,
        ge=0,
        le=3650,
        description="warn a data source's owner this many days before its files' content is "
        "deleted for retention",
    )
    retention_worker: bool = Field(
        True, description="run the retention sweep in a background thread of the gateway"
    )
    retention_sweep_seconds: float = Field(
        3600.0, gt=0, description="how often the retention sweep runs"
    )

    @field_validator("audit_retention_days")
    @classmethod
    def _audit_kept_six_months(cls, value: int) -> int:
        if value < MIN_AUDIT_RETENTION_DAYS:
            raise ValueError(
                f"audit_retention_days={value} is refused: audit events must be kept at least "
                f"six months ({MIN_AUDIT_RETENTION_DAYS} days), EU AI Act Art. 19(1) and 26(6)"
            )
        return value

    policy_poll_seconds: float = Field(
        0.5, gt=0, description="how often a process looks for policy changes made elsewhere"
    )
    log_json: bool | None = Field(None, description="JSON logs; default: on in prod, off in dev")
    executor: Literal["local", "ray"] = Field(
        "local", description="where jobs run: worker processes of this machine, or a Ray cluster"
    )
    local_workers: int = Field(
        1,
        ge=0,
        le=64,
        description="job workers the gateway starts (one job each; 0: run `tunegate worker`)",
    )
    lease_seconds: float = Field(
        60.0, gt=0, description="a running job whose worker is silent this long is taken back"
    )
    heartbeat_seconds: float = Field(
        10.0, gt=0, description="how often a worker renews the lease of the job it runs"
    )
    max_attempts: int = Field(
        2, ge=1, description="runs of a job, resumes from a checkpoint included, before it fails"
    )
    checkpoint_minutes: float = Field(
        10.0,
        ge=0,
        description="a running job also writes a checkpoint this often (besides each epoch's "
        "end); 0: only at epoch ends",
    )
    offline: bool = Field(
        True,
        description="no external service is reachable: a job's integrations that report to "
        "one (wandb) are refused",
    )
    checkpoint_keep: int = Field(
        3, ge=1, le=100, description="checkpoints kept per job, the newest (OpenAI keeps 3)"
    )
    ray_address: str | None = Field(None, description="Ray cluster address; None: a local Ray")
    ray_num_gpus: float = Field(0.0, ge=0, description="GPUs each job asks Ray for")
    ray_train_workers: int = Field(
        1,
        ge=1,
        le=1024,
        description="data-parallel Ray Train workers per ray job (>1: TorchTrainer, gloo on "
        "CPU, nccl on GPU; each worker asks for 1 CPU and ray_num_gpus GPUs); the job's "
        "artifact_dir must be storage every worker's node shares",
    )
    quota_concurrent_jobs: int = Field(
        4, ge=1, description="jobs a tenant may have validating, queued or running at once"
    )
    quota_device_hours_per_month: float = Field(
        100.0, gt=0, description="estimated device-hours a tenant's jobs may use per month"
    )
    estimate_device: str = Field(
        "cpu", max_length=64, description="the device cost estimates are stated for"
    )
    estimate_device_flops: float = Field(
        1e11, gt=0, description="peak FLOP/s of estimate_device (fp32 CPU ~1e11; H100 bf16 ~1e15)"
    )
    estimate_mfu: float = Field(
        0.4, gt=0, le=1, description="share of peak a run is assumed to reach in the estimate"
    )

    # re-evaluation and serving cost
    reevaluate_every_days: int = Field(
        30,
        ge=0,
        description="production models are re-evaluated on their held-out set and OOD probe "
        "this often (days since promotion or the last re-evaluation); 0: only on demand",
    )
    reevaluation_max_drop: float = Field(
        0.05,
        ge=0,
        le=1,
        description="a re-evaluation flags the version `degraded` when its task metric "
        "(exact match, token F1; DPO: preference accuracy) fell by more than this (absolute) "
        "since promotion",
    )
    reevaluation_max_ood_increase: float = Field(
        0.05,
        ge=0,
        description="... or when its OOD probe loss rose by more than this (relative) since "
        "promotion",
    )
    reevaluation_worker: bool = Field(
        True,
        description="run re-evaluations in a background thread of the gateway (off: they "
        "wait, queued, for a gateway that runs one)",
    )
    reevaluation_poll_seconds: float = Field(
        60.0, gt=0, description="how often that thread looks for due and queued re-evaluations"
    )
    device_hour_price: float = Field(
        0.0,
        ge=0,
        description="price of one device-hour of estimate_device (currency of your choice); "
        "prices training and serving in the dossier (0: unpriced, figures in device-hours)",
    )
    hosted_price_per_1k_tokens: float | None = Field(
        None,
        ge=0,
        description="per-1k-token price of the larger hosted model the tuned one replaces, in "
        "the same currency: the dossier's break-even volume is against it (None: not shown)",
    )

    # inference (issue 15: /v1/chat/completions)
    inference_backend: Literal["local", "vllm", "noop"] = Field(
        "local",
        description="what serves /v1/chat/completions: transformers+peft in this process, "
        "vLLM multi-LoRA (optional extra, GPU), or noop (echoes at once: tests, overhead bench)",
    )
    inference_max_input_tokens: int = Field(
        4096, ge=1, description="a prompt over this many tokens gets 400 (per model: below)"
    )
    inference_max_output_tokens: int = Field(
        1024, ge=1, description="max_tokens over this gets 400; the default max_tokens"
    )
    inference_model_limits: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="per model id or base model name: {max_input_tokens, max_output_tokens} "
        "overriding the two above (JSON)",
    )
    inference_tokens_per_minute: int = Field(
        100_000,
        ge=1,
        description="tokens (prompt + max_tokens, settled to the real count) a tenant may use "
        "per minute in this process; over it: 429 with retry-after",
    )
    inference_max_concurrent: int = Field(
        8, ge=1, le=1024, description="generations handed to the backend at once"
    )
    inference_queue_size: int = Field(
        32,
        ge=0,
        le=100_000,
        description="requests waiting for a generation slot; beyond: 503 with retry-after",
    )
    inference_queue_timeout_seconds: float = Field(
        30.0, gt=0, description="a request waits this long for a slot at most, then 503"
    )
    inference_retry_after_seconds: int = Field(
        1, ge=1, description="the retry-after a full queue answers with"
    )
    inference_await_record: bool = Field(
        True,
        description="a non-streamed answer is sent only once its usage row and audit event "
        "are committed: no answer leaves unrecorded (a failed write is 503). Off: sent at "
        "once and recorded milliseconds behind (like a stream's), for less latency, but a "
        "process that dies (killed, out of memory) loses the records still queued, of calls "
        "it already answered; a graceful stop writes them",
    )
    inference_resolve_cache_seconds: float = Field(
        1.0,
        ge=0,
        le=60,
        description="cache the rows a call resolves (model, base model, data sources, split, "
        "text retention) for this long, so a call needs no query (0: read them on every "
        "call). A change committed by this process (retire, flag, split, purpose) drops the "
        "cache at once; one committed by another process is seen within this time",
    )
    inference_transcript_max_retention_days: int = Field(
        365, ge=1, description="the longest text retention a compliance officer may set"
    )

    # inference backends (issue 15: local transformers+peft, vllm)
    inference_device: str = Field(
        "auto", max_length=32, description="local backend: auto (cuda when present), cpu, cuda:N"
    )
    inference_adapter_cache: int = Field(
        8, ge=1, le=1024, description="LoRA adapters kept attached per base model (LRU)"
    )
    inference_batch_window_ms: float = Field(
        5.0, ge=0, le=1000, description="local backend: how long an idle worker waits to batch"
    )
    inference_max_batch: int = Field(
        16, ge=1, le=1024, description="local backend: requests decoded together per base model"
    )
    vllm_gpu_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="vllm backend: share of GPU memory each engine may use"
    )
    vllm_max_loras: int = Field(
        8, ge=1, le=256, description="vllm backend: adapters in one batch (max_loras)"
    )
    vllm_max_lora_rank: int = Field(
        64, ge=1, le=512, description="vllm backend: the largest LoRA rank it accepts"
    )
    vllm_max_model_len: int | None = Field(
        None, ge=16, description="vllm backend: context length (None: the model's own)"
    )

    @model_validator(mode="after")
    def _refuse_weak_secrets_outside_dev(self) -> Settings:
        if self.env == "dev":
            return self
        if self.jwt_secret is None and self.jwks_url is None:
            raise InsecureSettingsError(
                "TUNEGATE_JWT_SECRET (or TUNEGATE_JWKS_URL) is required outside dev"
            )
        if self.jwt_secret is not None:
            if self.jwt_secret == DEV_JWT_SECRET:
                raise InsecureSettingsError("TUNEGATE_JWT_SECRET is the dev default")
            if len(self.jwt_secret.encode()) < MIN_SECRET_BYTES:
                raise InsecureSettingsError(
                    f"TUNEGATE_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes"
                )
        if self.audit_signing_key is None:
            raise InsecureSettingsError("TUNEGATE_AUDIT_SIGNING_KEY is required outside dev")
        return self

    @property
    def effective_jwt_secret(self) -> str | None:
        if self.jwt_secret is not None:
            return self.jwt_secret
        return DEV_JWT_SECRET if self.env == "dev" else None

    @property
    def effective_signing_key_path(self) -> Path:
        return self.audit_signing_key or self.artifact_dir / "audit-signing-key.pem"

    @property
    def json_logs(self) -> bool:
        return self.log_json if self.log_json is not None else self.env == "prod"


@lru_cache
def get_settings() -> Settings:
    return Settings()
