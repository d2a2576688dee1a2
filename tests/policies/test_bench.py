import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_authz_bench_quick_run_agrees_with_casbin():
    out = subprocess.run(  # noqa: S603
        [sys.executable, str(ROOT / "bench" / "authz.py"), "--quick", "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "identical to plain casbin: yes" in out.stdout
