"""The Casbin model itself. (What policies/ may import is an import-linter contract in
pyproject.toml, run by `make lint`.)"""

from pathlib import Path

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def test_model_denies_when_nothing_matches():
    text = (POLICIES / "model.conf").read_text()
    effect = next(line for line in text.splitlines() if line.startswith("e = "))
    assert effect == "e = some(where (p.eft == allow)) && !some(where (p.eft == deny))"
