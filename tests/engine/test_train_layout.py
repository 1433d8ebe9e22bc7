"""Evaluation does not depend on the trainer: ``engine.train.evaluate`` imports (and loads)
no ``engine.train.trainer``; both take their data from ``engine.train.data``."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_evaluation_loads_no_trainer():
    probe = ("import sys, engine.train.evaluate as e; "
             "print('engine.train.trainer' in sys.modules, e.collate_tensors.__module__, "
             "e.synthetic_dataset.__module__)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "engine.train.data", "engine.train.data"]
    assert "engine.train.trainer" not in (REPO / "engine" / "train" / "evaluate.py").read_text()
