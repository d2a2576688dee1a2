"""OpenAI's chat completion objects (request, `chat.completion`, `chat.completion.chunk`)
and tunegate's governance views: usage, traffic, the traffic split and text retention.

Unknown fields are refused (extra="forbid"), as the jobs API does; OpenAI parameters the
gateway does not implement (tools, logprobs, response_format, ...) are refused with a
reason rather than silently ignored. tunegate's own fields come through the SDK's
``extra_body`` (``purpose``) or ``extra_headers`` (``X-Tunegate-Purpose``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from gateway.fields import FreeText, Purpose

ModelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._@:-]{1,128}$")]
Reason = Annotated[FreeText, StringConstraints(min_length=3, max_length=2000)]
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00]*$")]
MetadataValue = Annotated[str, StringConstraints(max_length=512, pattern=r"^[^\x00]*$")]
StopText = Annotated[str, StringConstraints(min_length=1, max_length=256)]

# OpenAI parameters accepted by the SDK that this gateway does not implement: refused with
# `unsupported_parameter` when set to anything but their neutral value.
UNSUPPORTED = (
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "response_format",
    "audio",
    "modalities",
    "prediction",
    "web_search_options",
    "reasoning_effort",
    "service_tier",
    "parallel_tool_calls",
)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: FreeText


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: FreeText | list[TextPart] = Field(max_length=1_000_000)
    name: str | None = Field(None, max_length=64)

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class ChatCompletionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelName
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=1024)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: StopText | list[StopText] | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    n: int | None = Field(None, ge=1, le=1, description="only 1 choice is generated")
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)
    store: bool | None = None
    metadata: dict[MetadataKey, MetadataValue] | None = Field(None, max_length=16)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    # tunegate: what the call is for (default: the model's training purpose); also
    # metadata.purpose or the X-Tunegate-Purpose header
    purpose: Purpose | None = None
    # refused below unless neutral (see UNSUPPORTED)
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    logit_bias: dict[str, Any] | None = None
    response_format: Any = None
    audio: Any = None
    modalities: Any = None
    prediction: Any = None
    web_search_options: Any = None
    reasoning_effort: Any = None
    service_tier: Any = None
    parallel_tool_calls: Any = None

    @model_validator(mode="after")
    def _one_of_each(self) -> ChatCompletionCreate:
        if (
            self.max_tokens is not None
            and self.max_completion_tokens is not None
            and self.max_tokens != self.max_completion_tokens
        ):
            raise ValueError("give max_tokens or max_completion_tokens, not two different values")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream: true")
        return self

    def unsupported(self) -> str | None:
        """The first OpenAI parameter set that the gateway does not implement."""
        for name in UNSUPPORTED:
            value = getattr(self, name)
            if value in (None, False, [], {}) or (name == "response_format" and _is_text(value)):
                continue
            if name in ("tool_choice", "service_tier") and value in ("none", "auto", "default"):
                continue
            return name
        if self.frequency_penalty not in (None, 0.0):
            return "frequency_penalty"
        if self.presence_penalty not in (None, 0.0):
            return "presence_penalty"
        return None

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop[:4])

    @property
    def body_purpose(self) -> str | None:
        return self.purpose or (self.metadata or {}).get("purpose")


def _is_text(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") == "text"


# --- the answers --------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    """OpenAI's `chat.completion`; `model` is the version that served it (after the
    traffic split), `tunegate` says what was asked and for which purpose."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None
    tunegate: dict[str, Any]


# --- governance views ---------------------------------------------------------------------

GroupBy = Literal["user", "purpose", "day"]


class UsageGroup(BaseModel):
    key: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    errors: int


class ModelUsage(BaseModel):
    object: Literal["model.usage"] = "model.usage"
    model_id: str
    since: int | None
    until: int | None
    group_by: GroupBy | None
    calls: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    errors: int
    groups: list[UsageGroup]


class VersionTraffic(BaseModel):
    model_version_id: str
    role: Literal["production", "candidate", "other"]
    calls_last_hour: int
    calls_last_day: int
    share_last_hour: float
    share_last_day: float
    errors_last_day: int
    error_rate_last_day: float
    tokens_last_day: int
    mean_latency_ms_last_day: float | None


class TrafficSplitPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    model_id: str
    candidate_id: str | None
    percent: float
    reason: str
    set_by: str
    set_at: int
    policy_version: str


class ModelTraffic(BaseModel):
    """Who served the calls naming this model, the last hour and day: its production
    version and, under a canary, the candidate, side by side."""

    object: Literal["model.traffic"] = "model.traffic"
    model_id: str
    split: TrafficSplitPublic | None
    versions: list[VersionTraffic]


class TrafficSplitSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    candidate: ModelName | None = Field(
        None, description="the candidate version (same tenant and base model); None ends it"
    )
    percent: float = Field(ge=0.0, le=100.0, description="share of calls the candidate gets")
    reason: Reason


class TextRetentionSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep_text: bool
    retention_days: int = Field(0, ge=0, description="how long kept text stays (keep_text)")
    reason: Reason


class InferenceSettingsPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    object: Literal["model.inference_settings"] = "model.inference_settings"
    model_id: str
    keep_text: bool
    retention_days: int
    set_by: str
    set_at: int
    policy_version: str
