import ast
from pathlib import Path

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def test_policies_never_imports_gateway_or_audit():
    for path in POLICIES.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in {"gateway", "audit"}, f"{path.name}: {name}"


def test_model_denies_when_nothing_matches():
    text = (POLICIES / "model.conf").read_text()
    effect = next(line for line in text.splitlines() if line.startswith("e = "))
    assert effect == "e = some(where (p.eft == allow)) && !some(where (p.eft == deny))"
