"""Import arrows run one way: cli -> runner -> experiments -> building blocks.

Building blocks (nn, metrics, data, explain, programs, train, report) never import an experiment,
the runner or the command line; an experiment never imports the runner or another experiment
(its own report module, `<name>_report`, is part of it). Reuse goes through the registry
(`get_experiment`, `load_trained`), which the runner resolves.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "syllabus"
BLOCKS = ("nn", "metrics", "data", "explain", "programs", "train", "report")
RUNNERS = ("syllabus.runner", "syllabus.run_all", "syllabus.cli")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n.startswith("syllabus")}


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize("path", [p for b in BLOCKS for p in _modules(b)], ids=lambda p: str(p.relative_to(PACKAGE)))
def test_building_blocks_import_no_experiment_runner_or_cli(path):
    bad = {n for n in _imports(path) if n.startswith(("syllabus.experiments", *RUNNERS))}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def _experiment_modules() -> list[str]:
    return [p.stem for p in _modules("experiments") if "register(Experiment(" in p.read_text()]


def _owner(module: str) -> str:
    """The experiment a module of syllabus/experiments belongs to: `gradcam_report` -> `gradcam`
    (the longest experiment module name it starts with)."""
    owners = [e for e in _experiment_modules() if module.startswith(e)]
    return max(owners, key=len) if owners else module


@pytest.mark.parametrize("path", [p for p in _modules("experiments") if p.name != "__init__.py"],
                         ids=lambda p: p.name)
def test_experiments_import_neither_the_runner_nor_each_other(path):
    me = _owner(path.stem)
    for name in _imports(path):
        assert not name.startswith(RUNNERS), f"{path.name} imports {name}"
        parts = name.split(".")
        if parts[:2] == ["syllabus", "experiments"] and len(parts) > 2:
            other = parts[2]
            known = (PACKAGE / "experiments" / f"{other}.py").exists()
            assert not known or _owner(other) == me, f"{path.name} imports the experiment module {other}"


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("from syllabus.experiments import resnet_norms\nimport syllabus.runner\n")
    assert {"syllabus.experiments.resnet_norms", "syllabus.runner"} <= _imports(bad)
