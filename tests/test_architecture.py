"""The dependency rule: `signal2image` and `models` import nothing from `pipeline` or `deploy`;
`deploy` (serving) imports nothing from `pipeline` (training). See docs/architecture.md."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

# package -> the packages it must never import (at module level or inside a function)
FORBIDDEN = {
    "signal2image": ("pipeline", "deploy", "models"),
    "models": ("pipeline", "deploy"),
    "deploy": ("pipeline",),
}


def wrong_way_imports(root: Path) -> list[str]:
    """`file:line imports X` for every import that breaks the rule under `root`."""
    found = []
    for package, banned in FORBIDDEN.items():
        for file in sorted((root / package).rglob("*.py")):
            tree = ast.parse(file.read_text(), filename=str(file))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    if name.split(".")[0] in banned:
                        found.append(f"{file.relative_to(root)}:{node.lineno} imports {name}")
    return found


def test_lower_packages_never_import_higher_ones():
    assert wrong_way_imports(ROOT) == []


def test_the_check_sees_a_wrong_way_import(tmp_path):
    for package in FORBIDDEN:
        (tmp_path / package).mkdir()
    (tmp_path / "deploy" / "ok.py").write_text("import numpy\nfrom signal2image import prepare\n")
    (tmp_path / "deploy" / "bad.py").write_text("def f():\n    from pipeline.errors import UserError\n")
    (tmp_path / "models" / "bad.py").write_text("import deploy.inferencer\n")
    assert wrong_way_imports(tmp_path) == [
        "models/bad.py:1 imports deploy.inferencer",
        "deploy/bad.py:2 imports pipeline.errors",
    ]


def test_serving_loads_without_the_training_stack():
    """What the line's service imports: no module of `pipeline` comes along."""
    code = (
        "import sys\n"
        "import deploy.service, deploy.inferencer, deploy.store, deploy.variants, deploy.signal_request\n"
        "print(sorted(m for m in sys.modules if m == 'pipeline' or m.startswith('pipeline.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
