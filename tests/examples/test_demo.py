"""`make demo-quick` end to end: the demo script against a real gateway subprocess, in a
working folder of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.py"

# The story's milestones, as the demo narrates them (whitespace normalised: the console
# wraps long lines).
MILESTONES = (
    "refused 403 permission_denied on ds:ds-",
    "job succeeded",
    "asks for its promotion with an override reason",
    "bob approves the promotion of his own model: 403",
    "carol (compliance-officer) approves it under policy version",
    ": production",
    "carol exports the dossier",
    "carol verifies the audit chain: ok,",
    "is proven offline against the checkpoint",
    "calls the production model with the openai SDK",
    "answer:",
)


def test_quick_demo_tells_the_whole_story(tmp_path):
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TUNEGATE_") and key not in ("FORCE_COLOR", "COLUMNS")
    }
    env.update({"HF_HUB_OFFLINE": "1", "NO_COLOR": "1"})
    result = subprocess.run(  # noqa: S603 (the interpreter running the tests, our own script)
        [sys.executable, str(DEMO), "--quick"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = " ".join(result.stdout.split())
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    missing = [line for line in MILESTONES if line not in output]
    assert not missing, (missing, result.stdout[-4000:])
    (demo_dir,) = (tmp_path / "var").glob("demo-*")
    (dossier,) = demo_dir.glob("dossier-ftjob-*.md")
    assert dossier.read_text().startswith("# Technical dossier: `ft:tiny-llama:")
    assert (demo_dir / "gateway.log").is_file()
