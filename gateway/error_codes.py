"""The catalogue of error codes: every machine-readable ``code`` the gateway answers with.

Two places carry a code: an API refusal, ``{"error": {"code", "message", "param", "type"}}``
(gateway.errors, gateway.error_handlers), and a failed fine-tuning job, whose ``error`` is
``{code, message, param}`` (gateway.executors). Some codes pass through from the libraries
unchanged: the token refusals (gateway.security.Reason), the policy reasons
(policies.vocabulary, policies.store) and the ingest refusals (ingest.pipeline,
ingest.gates).

Each entry says where the code appears, the HTTP statuses an API code is answered with and
what it means to whoever receives it. tests/gateway/test_error_codes.py walks the source and
fails when a code is raised that is not here, or listed here and raised nowhere; README.md's
error table is generated from this module::

    python -m gateway.error_codes                 # print the table
    python -m gateway.error_codes --write-readme  # rewrite the table in README.md
    python -m gateway.error_codes --check-readme  # exit 1 when README.md's table is stale

No web framework here: gateway.errors consults it when an error is built.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

Where = Literal["api", "job"]

API: Final[Where] = "api"
JOB: Final[Where] = "job"

#: The areas, in the order the catalogue and the README list them, with their headings.
AREAS: Final[dict[str, str]] = {
    "authentication": "Authentication",
    "authorization": "Authorization",
    "input": "Input",
    "data sources": "Data sources",
    "files": "Files",
    "erasure": "Erasure",
    "jobs": "Fine-tuning jobs",
    "job failures": "Job failures (the `error.code` of a job whose status is `failed`)",
    "models": "Base models and models",
    "providers": "Providers and exports",
    "audit": "Audit trail",
    "policy": "Policy",
    "operations": "Operations",
}


@dataclass(frozen=True)
class ErrorCode:
    """One code: where it appears, its HTTP statuses (API codes only) and its meaning."""

    code: str
    area: str
    where: Where
    statuses: tuple[int, ...]
    meaning: str


def _area(area: str, *rows: tuple[str, int | tuple[int, ...] | Where, str]) -> list[ErrorCode]:
    """One area's entries, each row ``(code, HTTP status or statuses, meaning)`` for an API
    code and ``(code, JOB, meaning)`` for a job failure."""
    entries = []
    for code, statuses, meaning in rows:
        if isinstance(statuses, str):
            entries.append(ErrorCode(code, area, JOB, (), meaning))
        else:
            answered = statuses if isinstance(statuses, tuple) else (statuses,)
            entries.append(ErrorCode(code, area, API, answered, meaning))
    return entries


CATALOGUE: Final[tuple[ErrorCode, ...]] = (
    *_area(
        "authentication",
        (
            "token_missing",
            401,
            "No bearer token was sent (or an empty one, or another scheme): send `Authorization: "
            "Bearer <token>`.",
        ),
        ("token_too_large", 401, "The Authorization header is longer than the gateway accepts."),
        (
            "token_malformed",
            401,
            "The token is not a compact JWS (three base64url segments with a JSON header).",
        ),
        (
            "token_header_invalid",
            401,
            "The token header is refused: critical extensions (`crit`), `b64`, no `alg`, or a "
            "malformed `kid`.",
        ),
        (
            "token_algorithm_refused",
            401,
            "The token's algorithm is not the one pinned to its key (`alg: none`, HS256 without a "
            "shared secret, another algorithm).",
        ),
        (
            "token_key_unknown",
            401,
            "The token's key (`kid`) is not in the identity provider's key set: get a token from "
            "the provider the gateway trusts.",
        ),
        ("token_signature_invalid", 401, "The token's signature does not verify."),
        ("token_expired", 401, "The token has expired: get a new one."),
        (
            "token_not_yet_valid",
            401,
            "The token is not valid yet (`nbf` or `iat` in the future): check the clocks.",
        ),
        (
            "token_issuer_invalid",
            401,
            "The token's issuer (`iss`) is not the one the gateway accepts.",
        ),
        ("token_audience_invalid", 401, "The token is meant for another audience (`aud`)."),
        (
            "token_claims_invalid",
            401,
            "A required claim (`sub`, `exp`, `iat`, `iss`, `aud`) is missing, or a claim has a "
            "value the gateway does not accept.",
        ),
        (
            "unknown_tenant",
            401,
            "The token's `tenant` claim is not a tenant this gateway knows (`TUNEGATE_TENANTS`, "
            "or `platform`), spelled as registered: lowercase, nothing around it, one string.",
        ),
        (
            "jwks_unavailable",
            503,
            "The identity provider's key set cannot be fetched and none is cached: retry later.",
        ),
        ("unauthenticated", 401, "The request is not authenticated."),
    ),
    *_area(
        "authorization",
        (
            "permission_denied",
            403,
            "The policy does not let you do this (`details` name the object, the action and the "
            "policy version): ask an admin for a grant.",
        ),
        (
            "authorization_error",
            403,
            "The request could not be authorized: a value in it is outside the authorization "
            "vocabulary.",
        ),
        ("forbidden", 403, "A governance gate refused the request."),
        (
            "platform_admin_required",
            403,
            "The object is global (a base model every tenant sees): only the platform admin, "
            "with a token for the `platform` domain, may change it. Register a base model for "
            "your own tenant instead, or ask the platform admin.",
        ),
        (
            "csrf_token_invalid",
            403,
            "A console form came without this session's CSRF token (expired, or sent from "
            "elsewhere): reload the page and submit it again.",
        ),
        (
            "four_eyes_violation",
            (403, 409),
            "Four eyes: whoever proposed a data source cannot approve it (409), and whoever asked "
            "for a promotion or trained the model cannot approve or reject the promotion (403, "
            "audited): ask someone else.",
        ),
        (
            "tenant_not_visible",
            (400, 404),
            "You can only see your own tenant (and, for policy rules, the global baseline `*`): "
            "drop the tenant filter or name your tenant.",
        ),
    ),
    *_area(
        "input",
        (
            "invalid_request",
            400,
            "The request does not match the API's schema: `param` names the first field at fault, "
            "`details` list every fault.",
        ),
        ("bad_request", 400, "The request was refused."),
        (
            "invalid_path_parameter",
            400,
            "A path parameter is not a plain id (1-128 of letters, digits and `. _ @ : -`).",
        ),
        (
            "invalid_filter",
            400,
            "A list filter is invalid (an audit trail filter, or a `metadata[key]=value` job "
            "filter).",
        ),
        ("invalid_cursor", 400, "The `after` cursor is not an id from this listing."),
        ("not_found", 404, "There is no such route, or no such object."),
        ("method_not_allowed", 405, "The route does not take this HTTP method."),
        (
            "http_error",
            400,
            "The web framework refused the request before the gateway saw it (e.g. a body it could"
            " not read).",
        ),
        (
            "payload_too_large",
            413,
            "The request body is larger than `MAX_REQUEST_BYTES`; it was refused before it was "
            "read.",
        ),
        ("unsupported_media_type", 415, "The request's content type is not accepted here."),
        ("conflict", 409, "The request conflicts with the current state of the object."),
        ("gone", 410, "What was asked for existed, but is gone."),
    ),
    *_area(
        "data sources",
        ("data_source_not_found", 404, "No data source with this id in your tenant."),
        ("data_source_exists", 409, "A data source with this name exists: choose another name."),
        (
            "not_proposed",
            409,
            "Only a proposed data source can be approved; this one is already approved or revoked.",
        ),
        ("already_revoked", 409, "The data source is already revoked."),
        (
            "data_source_not_approved",
            (403, 409),
            "The data source is not (or no longer) approved: nothing is uploaded to it or trained "
            "on it until a data owner approves it.",
        ),
        (
            "purpose_not_allowed",
            403,
            "The job's purpose is not one the data source was approved for (`details` list the "
            "allowed purposes).",
        ),
        # legal holds (issue 16 §3: gateway.retention)
        ("legal_hold_set", 409, "The data source is already under a legal hold."),
        ("legal_hold_not_set", 409, "The data source is under no legal hold to release."),
    ),
    *_area(
        "files",
        ("file_not_found", 404, "No file with this id in your tenant."),
        ("invalid_purpose", 400, "The upload's `purpose` is not one the gateway takes."),
        (
            "file_too_large",
            413,
            "The uploaded file is larger than `MAX_UPLOAD_BYTES`; nothing of it was kept.",
        ),
        (
            "insufficient_storage",
            507,
            "The store has too little free space for this upload; nothing was kept: retry later, "
            "or ask an operator.",
        ),
        (
            "invalid_ingest_settings",
            400,
            "The data source's ingest settings cannot be used (e.g. its `pii_action`).",
        ),
        ("ingest_failed", 400, "The ingest pipeline refused the upload."),
        (
            "upload_raced_erasure",
            409,
            "An erasure of the same content ran while the file was uploading: upload it again.",
        ),
        (
            "content_erased",
            410,
            "The file's content was erased (`details` name the erasure request).",
        ),
        (
            "file_not_stored",
            409,
            "The file was refused at upload and its content was not kept: read its report for the "
            "faults.",
        ),
        (
            "content_missing",
            410,
            "The file's content is missing from the store: an operator must look into it.",
        ),
        (
            "file_deleted",
            410,
            "The file was deleted (`DELETE /v1/files/{id}`): its content is gone, its record "
            "stays.",
        ),
        (
            "file_in_use",
            409,
            "A job that has not finished uses the file (`details.jobs` names them): cancel them or "
            "wait for them to finish, then delete it.",
        ),
        ("multipart_required", 415, "Upload a file as `multipart/form-data`."),
        (
            "invalid_multipart",
            400,
            "The multipart body is malformed (no boundary, a part without a form-data name, or it "
            "ended early).",
        ),
        ("too_many_parts", 400, "The multipart body has more form parts than allowed."),
        ("multiple_files", 400, "Send one file per upload."),
        ("duplicate_field", 400, "A form field was sent twice."),
        ("field_too_large", 400, "A form field is longer than allowed."),
        (
            "invalid_field",
            400,
            "A form field is not UTF-8, or is not a plain id where it names an object.",
        ),
        (
            "missing_field",
            400,
            "A required form field is missing, or comes after the file part (send `purpose` and "
            "`data_source` before `file`).",
        ),
    ),
    *_area(
        "erasure",
        ("erasure_request_not_found", 404, "No erasure request with this id in your tenant."),
        ("already_decided", 409, "The erasure request is already decided."),
        (
            "erasure_search_running",
            409,
            "The request's background search has not ended: decide once its status is open.",
        ),
    ),
    *_area(
        "jobs",
        ("job_not_found", 404, "No fine-tuning job with this id in your tenant."),
        (
            "job_not_cancellable",
            409,
            "The job has already finished (succeeded, failed or cancelled).",
        ),
        (
            "job_not_running",
            409,
            "Only a running job can be paused; `details.status` is the job's status (and "
            "`details.cancel_requested` whether its cancellation was asked for).",
        ),
        (
            "job_not_paused",
            409,
            "Only a paused job can be resumed; `details.status` is the job's status.",
        ),
        (
            "suspected_mislabel_not_found",
            404,
            "No flagged line with this id among the job's suspected mislabels.",
        ),
        (
            "exclusion_file_mismatch",
            400,
            "`exclude_lines_from` names a job that trained on another file: its reviewed "
            "lines are lines of that file, not of this job's training file.",
        ),
        (
            "not_job_requester",
            403,
            "Only whoever created the job, or an admin of the tenant, may pause or resume it.",
        ),
        (
            "file_not_usable",
            400,
            "A job's file is not a processed file whose content is still stored, or was not "
            "uploaded for fine-tuning.",
        ),
        (
            "too_few_examples",
            400,
            "The training file has fewer examples than its data source requires.",
        ),
        (
            "train_validation_overlap",
            400,
            "Validation examples repeat training examples, exactly or nearly: remove them from one"
            " file.",
        ),
        (
            "too_many_conflicts",
            400,
            "More of the training file's examples are in conflict groups (the same or nearly "
            "the same prompt, different answers) than its data source's `max_conflict_rate` "
            "allows; the details name the groups' lines.",
        ),
        (
            "fingerprint_outdated",
            400,
            "A job's training or validation file was fingerprinted for near-duplicates by an "
            "older version (another shingling): upload the file again.",
        ),
        (
            "conflicts_not_analysed",
            400,
            "The data source sets `max_conflict_rate` but the training file's datasheet "
            "predates the conflict analysis: upload the file again.",
        ),
        (
            "file_format_mismatch",
            400,
            "A job's files do not suit its method: DPO (`method.type: dpo`) trains on "
            "preference files (`input`, `preferred_output`, `non_preferred_output`), "
            "supervised fine-tuning on chat or prompt/completion files.",
        ),
        (
            "invalid_training_spec",
            400,
            "The job cannot be run as asked (its hyperparameters or LoRA settings do not make a "
            "valid training run).",
        ),
        (
            "lora_mismatch",
            400,
            "Continuing a fine-tuned model keeps its adapter's LoRA configuration: leave `lora` "
            "out or match it.",
        ),
        (
            "integration_unavailable",
            400,
            "A `wandb` integration cannot report while the gateway is offline (no external "
            "service is reachable): leave `integrations` out, or ask an operator to turn "
            "offline mode off (integrations are then stored and echoed, never reported to).",
        ),
        (
            "quota_exceeded",
            429,
            "A tenant quota is used up (concurrent jobs, or device-hours this month; `details` "
            "name it, its limit and the use): wait, or ask for a higher quota.",
        ),
    ),
    *_area(
        "job failures",
        ("invalid_spec", JOB, "The worker could not read the job's training spec."),
        (
            "checkpoint_hash_mismatch",
            JOB,
            "The checkpoint to resume from is not the one this job recorded; the job did not "
            "resume.",
        ),
        (
            "parent_model_missing",
            JOB,
            "The job continues an adapter but names no registered parent model.",
        ),
        (
            "parent_adapter_hash_mismatch",
            JOB,
            "The parent model's adapter on disk no longer matches its registered hash.",
        ),
        (
            "parent_adapter_mismatch",
            JOB,
            "The parent model's adapter has another LoRA configuration than the job's.",
        ),
        ("base_model_invalid", JOB, "The base model's files do not match its manifest."),
        (
            "invalid_training_file",
            JOB,
            "The trainer could not use the training file (the message names the lines at fault).",
        ),
        (
            "out_of_memory",
            JOB,
            "The run ran out of device memory: try a smaller batch size or sequence length.",
        ),
        (
            "training_error",
            JOB,
            "Training failed with an unexpected error (the server log has the detail).",
        ),
        (
            "registration_failed",
            JOB,
            "The run finished but its model could not be registered; no model was registered.",
        ),
        (
            "worker_lost",
            JOB,
            "The worker running the job stopped renewing its lease, and it could not be resumed "
            "(no checkpoint, or every attempt used).",
        ),
        (
            "artifact_hash_mismatch",
            JOB,
            "The run's artifacts changed between training and registration; no model was "
            "registered.",
        ),
        (
            "training_data_erased",
            JOB,
            "A file the job trained on was erased while it ran; no model was registered.",
        ),
        (
            "training_data_mismatch",
            JOB,
            "The run read data that is not the stored content of the job's files; no model was "
            "registered.",
        ),
        (
            "reevaluation_adapter_mismatch",
            JOB,
            "A re-evaluation found the model's adapter deleted, or its bytes no longer the ones "
            "the registry holds; nothing was evaluated.",
        ),
        (
            "evaluation_data_unavailable",
            JOB,
            "A re-evaluation could not read what the model was evaluated on (its base model, "
            "training or validation file is erased or gone, or the job recorded no spec).",
        ),
        (
            "reevaluation_error",
            JOB,
            "A re-evaluation failed with an unexpected error (the server log has the detail).",
        ),
    ),
    *_area(
        "models",
        ("base_model_not_found", 404, "No base model with this name is registered."),
        (
            "base_model_exists",
            409,
            "A base model with this name is registered: choose another name.",
        ),
        (
            "base_model_storage_occupied",
            409,
            "The content store holds a directory for this name without a registry entry (an "
            "interrupted registration?): an operator must remove it.",
        ),
        ("base_model_retired", 400, "The base model is retired: nothing new is trained on it."),
        ("already_retired", 409, "The base model or model is already retired."),
        ("path_not_absolute", 400, "A base model's source path must be absolute."),
        (
            "path_not_allowed",
            400,
            "The source path is outside the model import roots, or none are configured "
            "(`TUNEGATE_MODEL_IMPORT_ROOTS`; without them only packaged models can be registered).",
        ),
        ("path_not_found", 400, "The source path does not exist or cannot be resolved."),
        (
            "unsupported_file",
            400,
            "The source directory holds a symlinked directory or something that is not a regular "
            "file.",
        ),
        ("not_a_directory", 400, "`source.directory` is not a directory."),
        (
            "not_a_model_directory",
            400,
            "`source.directory` is not a Hugging Face model directory (`config.json` and "
            "`*.safetensors` weights).",
        ),
        ("not_a_gguf_file", 400, "`source.gguf` is not a GGUF file."),
        (
            "package_not_installed",
            400,
            "The packaged model is not installed on the gateway (the message says how to install "
            "it).",
        ),
        ("manifest_mismatch", 400, "The model's files do not match its manifest."),
        (
            "import_failed",
            400,
            "The source could not be imported as a model (the server log has the detail).",
        ),
        (
            "storage_full",
            503,
            "The content store is full; the base model was not registered: ask an operator.",
        ),
        ("model_not_found", 404, "No model with this id in your tenant."),
        (
            "model_retired",
            (400, 409),
            "The model is retired: it is not downloaded, served, or continued from by a job.",
        ),
        (
            "not_candidate",
            409,
            "Only a candidate model can be promoted; this one is in production or retired.",
        ),
        (
            "evaluation_not_passed",
            409,
            "The model's evaluation did not pass: ask for the promotion with an `override_reason` "
            "to go ahead anyway.",
        ),
        (
            "model_flagged",
            409,
            "The model is flagged for review (a revoked data source, an erasure request): it is "
            "not promoted until a compliance officer clears its flags "
            "(`POST /v1/models/{id}/clear_flag`) or a new version replaces it.",
        ),
        ("not_flagged", 409, "The model has no flag (of that `ref`) to clear."),
        (
            "no_evaluation_to_compare",
            409,
            "The model was not evaluated when it was trained: a re-evaluation has no figures "
            "to compare with.",
        ),
        (
            "reevaluation_in_progress",
            409,
            "A re-evaluation of the model is already queued or running "
            "(`details.reevaluation_id`).",
        ),
        (
            "promotion_request_not_found",
            404,
            "No promotion request with this id in your tenant.",
        ),
        (
            "promotion_pending",
            409,
            "The model already has a pending promotion request (`details.request_id`): have it "
            "decided first.",
        ),
        (
            "promotion_request_decided",
            409,
            "The promotion request was already decided (`details.status`): ask again with a new "
            "request.",
        ),
        (
            "model_deleted",
            (409, 410),
            "The model was deleted: its adapter is gone, its record, lineage and dossier stay.",
        ),
        (
            "model_in_production",
            409,
            "A model in production is not deleted: retire it first.",
        ),
        (
            "base_model_not_deletable",
            409,
            "Base models are not deleted through `DELETE /v1/models/{id}`: retire one with "
            "`POST /v1/base_models/{name}/retire`.",
        ),
        (
            "adapter_unavailable",
            409,
            "The model's recorded artifacts lie outside the artifact store: an operator must look "
            "into it.",
        ),
        (
            "adapter_missing",
            410,
            "An adapter file is missing from the artifact store: an operator must look into it.",
        ),
        (
            "adapter_hash_mismatch",
            409,
            "An adapter file no longer matches its recorded sha256; nothing was sent.",
        ),
        (
            "backend_unavailable",
            503,
            "The inference backend cannot serve: it is closed, or the `vllm` backend is selected "
            "without its optional extra (`pip install 'tunegate[vllm]'`) or a GPU.",
        ),
        (
            "base_model_unavailable",
            503,
            "The inference backend cannot load the base model: its files do not match its "
            "manifest or cannot be read. An operator must look into it.",
        ),
        (
            "model_not_callable",
            403,
            "A candidate model is called (`/v1/chat/completions`) only by its requester and its "
            "reviewers, for evaluation, until it is promoted.",
        ),
        (
            "unsupported_parameter",
            400,
            "The chat completion sets an OpenAI parameter this gateway does not implement "
            "(`param` names it: tools, logprobs, response_format, ...).",
        ),
        (
            "context_length_exceeded",
            400,
            "The prompt has more tokens than the model's input limit (`details` give both).",
        ),
        (
            "max_output_tokens_exceeded",
            400,
            "`max_tokens` is over the model's output limit (`details` give both).",
        ),
        (
            "rate_limit_exceeded",
            429,
            "The tenant's tokens-per-minute quota for inference is used up: retry after "
            "`retry-after` seconds (`details` give the quota and the use).",
        ),
        (
            "inference_queue_full",
            503,
            "Every generation slot is busy and the queue in front of them is full (or the wait "
            "ran out): retry after `retry-after` seconds.",
        ),
        (
            "inference_backend_error",
            503,
            "The inference backend failed on this call (`details.backend_code`): see the server "
            "log.",
        ),
        (
            "model_not_in_production",
            409,
            "Only a production model carries a traffic split (canary).",
        ),
        (
            "canary_base_mismatch",
            409,
            "A canary must be built on the same base model as the production version.",
        ),
    ),
    *_area(
        "providers",
        ("provider_not_found", 404, "No provider with this name is registered."),
        (
            "provider_exists",
            409,
            "A provider with this name is registered, or was (names are never reused): choose "
            "another name.",
        ),
        (
            "provider_model_exists",
            409,
            "A model name the provider would offer is taken, by a registered base model or by "
            "another provider's model (`details.names`): choose other names.",
        ),
        (
            "provider_retired",
            409,
            "The provider is retired: nothing is exported to it, and it cannot be retired twice.",
        ),
        (
            "credential_not_allowed",
            400,
            "`credential_ref` names a place the gateway does not read secrets from: use "
            "`env:TUNEGATE_PROVIDER_<NAME>` or a file directly inside one of "
            "`PROVIDER_CREDENTIAL_DIRS` (by default the `credentials` directory beside the "
            "artifact directory).",
        ),
        (
            "credential_unavailable",
            400,
            "The secret `credential_ref` names is not there (the variable is unset or empty, the "
            "file is missing, unreadable or too large): an operator must provide it.",
        ),
        (
            "export_forbidden_by_classification",
            403,
            "The data source's classification forbids every export to a provider (`restricted`).",
        ),
        (
            "transfer_not_recorded",
            403,
            "The data source holds personal data and its record allows no transfer to the "
            "provider: add a transfer record with a region the provider processes data in and "
            "a legal basis.",
        ),
    ),
    *_area(
        "audit",
        ("audit_event_not_found", 404, "No audit event with this sequence number in your tenant."),
        ("audit_trail_empty", 404, "The audit trail is empty: there is no checkpoint yet."),
        (
            "tree_size_out_of_range",
            400,
            "`tree_size` must cover the event and be at most the trail's size; for a "
            "consistency proof, `0 <= first <= second <=` the trail's size.",
        ),
        (
            "audit_checkpoint_not_found",
            404,
            "No checkpoint of that `tree_size` was signed: leave it out for the newest, or "
            "take a size from `GET /v1/audit/checkpoints`.",
        ),
        (
            "audit_sequencer_stalled",
            503,
            "The audit trail cannot be brought up to date, so nothing is read from or written to "
            "it: retry later; an operator must look at the server log.",
        ),
    ),
    *_area(
        "policy",
        ("not_a_string", 400, "A rule or filter field must be a string."),
        ("bad_ptype", 400, "A rule's `ptype` must be `p`, `g` or `g2`."),
        (
            "field_count",
            400,
            "A rule has the wrong number of fields for its `ptype`, or is not a list of rules.",
        ),
        ("bad_field", 400, "A rule names a field its `ptype` does not have."),
        ("empty", 400, "A rule field is empty."),
        ("too_long", 400, "A rule field is longer than 128 characters."),
        ("bad_chars", 400, "A rule field may only hold letters, digits and `. _ @ : - *`."),
        ("bad_subject", 400, "A subject must be `user:<sub>` or `role:<name>`."),
        ("bad_role", 400, "A role must be `role:<name>` (1-64 of letters, digits and `. _ -`)."),
        (
            "bad_tenant",
            400,
            "A tenant must be 1-64 of letters, digits and `. _ -`; `*` only in a `p` rule.",
        ),
        ("bad_kind", 400, "An object's kind is not one the vocabulary knows."),
        (
            "bad_object",
            400,
            "An object is not of the form its kind takes (`kind:<id>`, or the kind alone).",
        ),
        (
            "bad_wildcard",
            400,
            "`*` may only stand alone as an object's id, and not where no wildcard is allowed.",
        ),
        ("bad_action", 400, "The action is not one the vocabulary knows."),
        ("action_not_for_kind", 400, "The action does not apply to this kind of object."),
        ("bad_effect", 400, "A rule's effect must be `allow` or `deny`."),
        ("bad_class", 400, "A classification must be `class:<label>`."),
        ("bad_actor", 400, "The actor of a policy change must be 1-256 printable characters."),
        ("bad_limit", 400, "The listing's `limit` is out of range."),
        ("bad_reason", 400, "The change's `reason` must be text of at most 2000 characters."),
        ("duplicate_rule", 400, "The same rule appears twice in the change."),
        ("rule_in_add_and_remove", 400, "The same rule is both added and removed in the change."),
        ("empty_change", 400, "The change adds and removes nothing."),
        (
            "rule_outside_tenant",
            400,
            "A rule here must name your own tenant; the global baseline comes from the seed.",
        ),
        ("rule_exists", 409, "The rule to add is already there."),
        ("rule_not_found", 404, "The rule to remove is not there."),
        (
            "policy_version_conflict",
            409,
            "The policy is no longer at the version the change was planned against (`details` "
            "name the expected and the current version): plan again.",
        ),
        ("policy_version_not_found", 404, "No policy version has that id."),
        (
            "last_admin",
            409,
            "The change would leave a tenant without an admin, or deny the policy to `role:admin`.",
        ),
        (
            "invalid_stored_rule",
            500,
            "The database holds a rule the policy store never writes: an operator must look into "
            "it.",
        ),
        (
            "bad_changes",
            500,
            "A stored policy version's changes are malformed: an operator must look into it.",
        ),
    ),
    *_area(
        "operations",
        ("internal_error", 500, "An unexpected error: the server log has the detail."),
        ("unavailable", 503, "The gateway cannot serve the request now: retry later."),
        ("shutting_down", 503, "The gateway is starting or stopping: retry shortly."),
        ("database_busy", 503, "The database stayed busy: retry."),
        (
            "database_error",
            503,
            "The job could not be recorded in the database; nothing was created: retry.",
        ),
    ),
)

_BY_CODE: Final[dict[str, ErrorCode]] = {entry.code: entry for entry in CATALOGUE}


def lookup(code: str) -> ErrorCode | None:
    """The catalogue's entry for ``code``, or None when it is not catalogued."""
    return _BY_CODE.get(code)


# --- the README's table -------------------------------------------------------------------

README: Final = Path(__file__).resolve().parent.parent / "README.md"
README_START: Final = "<!-- error-codes:start -->"
README_END: Final = "<!-- error-codes:end -->"
_GENERATED_NOTE: Final = (
    "<!-- generated by `python -m gateway.error_codes --write-readme` from "
    "gateway/error_codes.py: edit that, not this table -->"
)


def _statuses(entry: ErrorCode) -> str:
    return ", ".join(map(str, entry.statuses)) if entry.where == API else "job"


def markdown_table() -> str:
    """The catalogue as Markdown: one table per area, in the catalogue's order."""
    blocks = []
    for area, heading in AREAS.items():
        entries = [entry for entry in CATALOGUE if entry.area == area]
        if not entries:
            continue
        rows = [f"| `{e.code}` | {_statuses(e)} | {e.meaning} |" for e in entries]
        blocks.append(
            "\n".join(
                [f"**{heading}**", "", "| code | HTTP | meaning |", "| --- | --- | --- |", *rows]
            )
        )
    return "\n\n".join(blocks)


def readme_block() -> str:
    """What lies between the README's markers, the markers included."""
    return "\n".join([README_START, _GENERATED_NOTE, "", markdown_table(), "", README_END])


def with_table(text: str) -> str:
    """``text`` (the README) with the block between its markers replaced by the current one."""
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"README.md lacks the markers {README_START} ... {README_END}")
    return text[:start] + readme_block() + text[end + len(README_END) :]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.error_codes", description="The catalogue of error codes."
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write-readme", action="store_true", help="rewrite README.md's table")
    action.add_argument(
        "--check-readme", action="store_true", help="exit 1 when README.md's table is stale"
    )
    parser.add_argument("--readme", type=Path, default=README, help="the README to use")
    args = parser.parse_args(argv)
    if not (args.write_readme or args.check_readme):
        print(markdown_table())
        return 0
    text = args.readme.read_text(encoding="utf-8")
    updated = with_table(text)
    if args.check_readme:
        if updated != text:
            print(f"{args.readme}: the error table is stale; run --write-readme", file=sys.stderr)
            return 1
        return 0
    if updated != text:
        args.readme.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
