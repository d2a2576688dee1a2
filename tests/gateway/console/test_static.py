"""The vendored front-end files are what their checksum list says, with their licences."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

VENDOR_DIRS = [
    Path(__file__).parents[3] / "gateway" / "console" / "static" / "vendor",
    Path(__file__).parent / "vendor",  # axe-core, for the browser tests only
]


@pytest.mark.parametrize("vendor", VENDOR_DIRS, ids=lambda p: p.parent.name)
def test_checksums_match_and_licences_are_kept(vendor):
    lines = (vendor / "SHA256SUMS").read_text().split("\n")
    entries = [line.split(maxsplit=1) for line in lines if line.strip()]
    assert entries
    for digest, name in entries:
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    assert any(name.endswith("LICENSE") for _, name in entries)


def test_htmx_is_served_with_the_headers(client):
    response = client.get("/console/static/vendor/htmx/htmx.min.js")
    assert response.status_code == 200 and b"htmx" in response.content[:2000]
    assert response.headers["x-content-type-options"] == "nosniff"
