"""Run-time modules never import training or measurement code (engine.train, engine.measure,
the detector's training engine.people.train_detector): checked in a fresh interpreter after
importing every one of them, and in their source (imports inside functions included)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("engine.train", "engine.measure", "engine.people.train_detector")


def _runtime_modules() -> list:
    names = ["engine.run", "engine.pipeline", "engine.people", "engine.landmarks", "engine.fit"]
    for pkg in ("people", "landmarks", "fit"):
        for p in sorted((REPO / "engine" / pkg).glob("*.py")):
            if p.stem != "__init__" and f"engine.{pkg}.{p.stem}" not in FORBIDDEN:
                names.append(f"engine.{pkg}.{p.stem}")
    return names


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def _imported_after(modules) -> list:
    script = ("import importlib, sys\n"
              f"for n in {modules!r}:\n"
              "    importlib.import_module(n)\n"
              "print('\\n'.join(sorted(sys.modules)))\n")
    res = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def test_runtime_modules_import_no_training_or_measurement_code():
    modules = _runtime_modules()
    assert {"engine.people.tracking", "engine.people.detect", "engine.people.learned",
            "engine.landmarks.stream", "engine.fit.fit"} <= set(modules)
    loaded = _imported_after(modules)
    assert "engine.people.tracking" in loaded and "engine.run" in loaded
    assert [m for m in loaded if _forbidden(m)] == []


def test_the_probe_sees_measurement_code_when_it_is_imported():
    """Guard against a vacuous test: the same probe notices engine.measure.tracking."""
    loaded = _imported_after(["engine.people.tracking", "engine.measure.tracking"])
    assert {"engine.measure.tracking", "engine.people.train_detector"} & set(loaded)


def _imports_in(path: Path) -> list:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return out


def test_no_runtime_source_imports_them_even_lazily():
    bad = {}
    for name in _runtime_modules():
        rel = name.replace(".", "/")
        path = REPO / (rel + ".py") if (REPO / (rel + ".py")).exists() else REPO / rel / "__init__.py"
        hits = [m for m in _imports_in(path) if _forbidden(m)]
        if hits:
            bad[name] = hits
    assert bad == {}


def test_runtime_needs_only_the_user_environments_packages():
    """What Set up Engine installs (requirements/engine.txt) is all the run-time modules load:
    no renderer (moderngl), no test or build tools."""
    loaded = set(_imported_after(_runtime_modules() + ["engine.overlay", "engine.check", "engine.landmarks.setup"]))
    extras = {"moderngl", "glcontext", "skimage", "matplotlib", "onnx", "ai_edge_litert", "pytest",
              "fast_simplification", "tensorflow"}
    assert sorted(extras & {m.split(".")[0] for m in loaded}) == []
