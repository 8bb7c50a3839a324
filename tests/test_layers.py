"""The package layer order (aprelu_exp/__init__.py) holds: every import of an aprelu_exp module, at
module level or inside a function, points to the importing module's own package or a layer below,
and function-level imports of the project's modules are gone."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import aprelu_exp

PACKAGE = Path(aprelu_exp.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    """The unit a module belongs to: its package under aprelu_exp, or a top-level module itself."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def layer_of(module: str) -> int:
    unit = unit_of(module)
    for level, units in enumerate(aprelu_exp.LAYERS):
        if unit in units:
            return level
    raise AssertionError(f"{unit} is in no layer of aprelu_exp.LAYERS; add it where it belongs")


def project_imports(tree: ast.Module, module: str):
    """(imported module, line, at module level?) for every import of an aprelu_exp module."""
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from aprelu_exp import x` imports the module aprelu_exp.x where there is one
            names = [f"{node.module}.{a.name}" if (PACKAGE / a.name).exists() or (PACKAGE / f"{a.name}.py").exists()
                     else node.module for a in node.names] if node.module == "aprelu_exp" else [node.module]
        else:
            continue
        for name in names:
            if name == "aprelu_exp" or name.startswith("aprelu_exp."):
                yield name, node.lineno, id(node) in top


MODULES = sorted(PACKAGE.rglob("*.py"))
# The one deferred project import: the main command loads its job (torch, Lightning) only when a job
# starts, so that --help, --cfg and tab completion answer at once (tests/test_installed.py checks it).
DEFERRED = {("aprelu_exp.__main__", "aprelu_exp.job")}


def test_every_module_is_in_a_layer_and_the_order_names_only_real_units():
    units = {unit_of(module_name(p)) for p in MODULES} - {"aprelu_exp"}
    declared = {u for layer in aprelu_exp.LAYERS for u in layer}
    assert units == declared


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_point_down_the_layers(path):
    module = module_name(path)
    if module == "aprelu_exp":
        return
    upward, deferred = [], []
    for imported, line, top_level in project_imports(ast.parse(path.read_text()), module):
        if imported == "aprelu_exp":
            continue
        if unit_of(imported) != unit_of(module) and layer_of(imported) >= layer_of(module):
            upward.append(f"line {line}: {imported} (layer {layer_of(imported)}) from layer {layer_of(module)}")
        if not top_level and (module, imported) not in DEFERRED:
            deferred.append(f"line {line}: {imported}")
    assert not upward, f"{module} imports a unit at or above its own layer: {upward}"
    assert not deferred, f"{module} imports project modules inside functions: {deferred}"


def test_the_checker_sees_an_upward_and_a_deferred_import():
    # The rule itself, on a module written for the purpose: training importing the search upward,
    # from inside a function.
    tree = ast.parse("import os\n\ndef f():\n    from aprelu_exp.search.storage import open_storage\n")
    found = list(project_imports(tree, "aprelu_exp.training.module"))
    assert found == [("aprelu_exp.search.storage", 4, False)]
    assert layer_of("aprelu_exp.search.storage") > layer_of("aprelu_exp.training.module")
