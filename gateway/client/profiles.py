"""Where the CLI keeps gateways and tokens: one JSON file, mode 0600, in the user's config dir.

`TUNEGATE_URL` and `TUNEGATE_TOKEN` override a profile's values; `TUNEGATE_CONFIG_DIR` moves
the file (tests, CI runners).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

FILE_NAME = "profiles.json"
DEFAULT_PROFILE = "default"


class ProfileError(Exception):
    """A profile that is missing, unreadable or incomplete."""


@dataclass(frozen=True)
class Profile:
    name: str
    url: str
    token: str | None = None
    # where `tunegate login --oidc` signed in, so the next login can do it again
    issuer: str | None = None
    client_id: str | None = None

    def __repr__(self) -> str:  # never show the token
        return (
            f"Profile(name={self.name!r}, url={self.url!r}, token={'***' if self.token else None})"
        )

    def stored(self) -> dict[str, Any]:
        data: dict[str, Any] = {"url": self.url, "token": self.token}
        if self.issuer:
            data |= {"issuer": self.issuer, "client_id": self.client_id}
        return data


def config_dir() -> Path:
    override = os.environ.get("TUNEGATE_CONFIG_DIR")
    return Path(override) if override else Path(platformdirs.user_config_dir("tunegate"))


def profiles_path() -> Path:
    return config_dir() / FILE_NAME


def _read() -> dict[str, Any]:
    path = profiles_path()
    if not path.exists():
        return {"default": None, "profiles": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ProfileError(f"{path}: cannot read ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
        raise ProfileError(f"{path}: not a tunegate profiles file")
    return data


def _write(data: dict[str, Any]) -> Path:
    """Atomically, created 0600 before any byte of a token is written."""
    path = profiles_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".profiles-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save(profile: Profile, *, make_default: bool = True) -> Path:
    data = _read()
    data["profiles"][profile.name] = profile.stored()
    if make_default or not data.get("default"):
        data["default"] = profile.name
    return _write(data)


def remove(name: str) -> bool:
    data = _read()
    if data["profiles"].pop(name, None) is None:
        return False
    if data.get("default") == name:
        data["default"] = next(iter(data["profiles"]), None)
    _write(data)
    return True


def names() -> tuple[list[str], str | None]:
    data = _read()
    return sorted(data["profiles"]), data.get("default")


def stored(name: str) -> Profile | None:
    """The profile as stored (no environment override), or None."""
    entry = _read()["profiles"].get(name)
    if not isinstance(entry, dict) or not entry.get("url"):
        return None
    return Profile(
        name=name,
        url=entry["url"],
        token=entry.get("token"),
        issuer=entry.get("issuer"),
        client_id=entry.get("client_id"),
    )


def resolve(name: str | None = None) -> Profile:
    """The profile NAME (or the default one), with `TUNEGATE_URL`/`TUNEGATE_TOKEN` on top."""
    env_url = os.environ.get("TUNEGATE_URL")
    env_token = os.environ.get("TUNEGATE_TOKEN")
    data = _read()
    chosen = name or data.get("default")
    stored = data["profiles"].get(chosen) if chosen else None
    if name and stored is None:
        raise ProfileError(f"no profile named {name!r}; run `tunegate login --profile {name}`")
    url = env_url or (stored or {}).get("url")
    if not url:
        raise ProfileError(
            "no gateway configured; run `tunegate login --url URL` or set TUNEGATE_URL"
        )
    token = env_token or (stored or {}).get("token")
    return Profile(name=chosen or "env", url=url, token=token)
