"""A provider's credential: where its secret is read from, and reading it.

A reference names one of two places, and no other:

- `env:TUNEGATE_PROVIDER_<NAME>`: an environment variable of the gateway's process, in the
  providers' own namespace;
- `file:<path>`: a file directly inside one of the gateway's credential directories
  (`settings.provider_credential_dirs`; by default `<artifact_dir>/../credentials`, e.g.
  `./var/credentials`). A symlink the operator put there is followed; `..` and
  subdirectories are refused.

Only the platform admin registers providers (policies/seed.csv), and even its token must not
turn the gateway into a sender of its own secrets (its JWT secret, its database password,
its signing key) to an address it chose: the namespace and the directories are the
operator's to fill.

The secret is read when it is needed and handed on as a `SecretStr`, whose repr hides it.
It is never stored in the database, returned by the API, or logged; the errors here name
the reference, never what it holds."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from pydantic import SecretStr

from gateway.config import Settings
from gateway.errors import InvalidRequest
from gateway.providers.schemas import CREDENTIAL_REF, ENV_PREFIX

CREDENTIALS_DIR = "credentials"
MAX_SECRET_BYTES = 16 * 1024
PARAM = "credential_ref"


def credential_dirs(settings: Settings) -> list[Path]:
    """The directories `file:` credentials lie in (none: no file credential is read)."""
    if settings.provider_credential_dirs is None:
        return [settings.artifact_dir.resolve().parent / CREDENTIALS_DIR]
    return [directory.resolve() for directory in settings.provider_credential_dirs]


def _not_allowed(message: str) -> InvalidRequest:
    return InvalidRequest(message, code="credential_not_allowed", param=PARAM)


def _unavailable(message: str) -> InvalidRequest:
    return InvalidRequest(message, code="credential_unavailable", param=PARAM)


def _confined(raw: str, directories: Sequence[Path]) -> Path:
    path = Path(raw)
    if not path.is_absolute() or ".." in path.parts:
        raise _not_allowed("a file credential is an absolute path without '..'")
    if not directories:
        raise _not_allowed("this gateway reads no file credentials (provider_credential_dirs)")
    if path.parent.resolve() not in {directory.resolve() for directory in directories}:
        names = ", ".join(str(directory) for directory in directories)
        raise _not_allowed(f"a file credential lies directly inside one of: {names}")
    return path


def _read_file(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise _unavailable(f"{path} is not a regular file")
            data = handle.read(MAX_SECRET_BYTES + 1)
    except OSError:
        raise _unavailable(f"{path} cannot be read") from None
    if len(data) > MAX_SECRET_BYTES:
        raise _unavailable(f"{path} is larger than {MAX_SECRET_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _unavailable(f"{path} is not UTF-8 text") from None


def read_secret(ref: str, *, directories: Sequence[Path]) -> SecretStr:
    """The secret `ref` names, surrounding whitespace removed; a 400 that names the
    reference (`credential_not_allowed`, `credential_unavailable`) when it cannot be."""
    if not CREDENTIAL_REF.match(ref):
        raise _not_allowed(f"a credential reference is env:{ENV_PREFIX}<NAME> or file:<path>")
    kind, _, value = ref.partition(":")
    if kind == "env":
        raw = os.environ.get(value)
        if raw is None:
            raise _unavailable(f"the environment variable {value} is not set")
        if len(raw.encode()) > MAX_SECRET_BYTES:
            raise _unavailable(f"the environment variable {value} is too long")
    else:
        raw = _read_file(_confined(value, directories))
    secret = raw.strip()
    if not secret:
        raise _unavailable(f"{value} is empty")
    return SecretStr(secret)
