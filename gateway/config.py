from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Known only so that prod start-up can refuse it; dev tokens are signed with it.
DEV_JWT_SECRET = "tunegate-dev-secret-do-not-use-in-production!"  # noqa: S105
MIN_SECRET_BYTES = 32


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
