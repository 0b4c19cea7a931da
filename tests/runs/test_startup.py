"""What a process imports before it does anything: `python run.py --help` answers without torch or Lightning (a
module-level import of either in run.py's own imports would cost every --help and every mistake ~1.5 s)."""
import subprocess
import sys

from tests.conftest import ROOT


def test_help_imports_neither_torch_nor_lightning():
    result = subprocess.run([sys.executable, "-X", "importtime", "run.py", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "== Configuration groups ==" in result.stdout
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "hydra" in imported  # (the importtime lines were read)
    assert not {name for name in imported if name.split(".")[0] in ("torch", "pytorch_lightning", "pandas")}
