"""The architecture rules of docs/architecture.md, checked on the package as it is.

* the import-linter contracts in ``pyproject.toml`` (layers, no cycles between siblings) hold;
* there is no import cycle between any two of sono3d's modules;
* sono3d's own modules are imported at module level, never inside a function;
* the base (errors, types, metrics, geometry, io) imports without pyvista, vtk or nibabel.

Each checker is also run on a small package made to break its rule, so a checker that reports
nothing can not pass for a kept rule.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import grimp
import importlinter  # noqa: F401  - the dev extra must be installed: fail here rather than skip

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "sono3d"
TOY = "sono3d_toy_layers"  # the made-to-break package; a name no real package has


def lint_imports(config: Path, cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``lint-imports --config CONFIG --no-cache`` in a subprocess (the command docs/architecture.md gives)."""
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, "--config", str(config), "--no-cache", "--no-logo"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def import_cycles(package: str) -> list[tuple[str, ...]]:
    """Every import cycle between modules of ``package``, one shortest cycle per import that closes one.

    grimp reads every import statement, in functions too; a cycle is an import ``a -> b`` with a
    chain of imports back from ``b`` to ``a``. Each cycle is rotated to start at its smallest name.
    """
    graph = grimp.build_graph(package, cache_dir=None)
    cycles = set()
    for a in graph.modules:
        for b in graph.find_modules_directly_imported_by(a):
            back = graph.find_shortest_chain(importer=b, imported=a)
            if back:
                cycle = (a, *back[:-1])
                i = cycle.index(min(cycle))
                cycles.add(cycle[i:] + cycle[:i])
    return sorted(cycles)


def function_level_imports(root: Path, package: str) -> list[str]:
    """``path:line  import`` for each import of ``package``'s own modules made inside a function."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                names = []
                if isinstance(node, ast.ImportFrom):
                    names = ["." * node.level + (node.module or "")] if node.level else [node.module or ""]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                for name in names:
                    if name.startswith(".") or name == package or name.startswith(package + "."):
                        found.append(f"{path.relative_to(root.parent)}:{node.lineno}  {name}")
    return sorted(set(found))


def _report(lines: list[str]) -> str:
    return "\n  " + "\n  ".join(lines)


# ---------------------------------------------------------------------------- the package as it is


def test_import_linter_contracts_hold():
    res = lint_imports(ROOT / "pyproject.toml", ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "broken" in res.stdout and "0 broken" in res.stdout, res.stdout


def test_no_import_cycle_between_modules():
    cycles = import_cycles("sono3d")
    assert not cycles, "import cycles:" + _report([" -> ".join((*c, c[0])) for c in cycles])


def test_own_modules_imported_at_module_level():
    late = function_level_imports(SRC, "sono3d")
    assert not late, ("imports of sono3d's own modules inside functions (move them to the top of the "
                      "module; lazy imports are for heavy optional third-party packages only):" + _report(late))


def test_base_imports_without_pyvista_vtk_nibabel():
    """The sweep engine's GPU machine has none of them: the base must not need them to import."""
    code = textwrap.dedent("""
        import sys
        BLOCKED = ("pyvista", "vtk", "vtkmodules", "nibabel")
        for name in BLOCKED:
            sys.modules[name] = None  # any import of it now raises ImportError
        import sono3d.errors, sono3d.types, sono3d.metrics, sono3d.geometry, sono3d.io
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED and sys.modules[m] is not None)
        assert not loaded, loaded
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stdout + res.stderr


# ---------------------------------------------------------- the checkers catch what they are for


def _write_toy(tmp: Path) -> Path:
    """A package with sono3d's top-level names that breaks each rule once; its config is sono3d's
    own contracts with the package renamed. Returns the config path."""
    pkg = tmp / TOY
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layer_names = set()
    for contract in contracts:
        for layer in contract.get("layers", []):
            layer_names.update(n.strip(" ()") for n in layer.replace(":", "|").split("|"))
    for name in layer_names | {"stray"}:  # "stray": a top-level module in no layer
        (pkg / name).mkdir(parents=True)
        (pkg / name / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    # a base module reaching up to the top, inside a function (where cycles used to hide)
    (pkg / "errors" / "__init__.py").write_text(f"def f():\n    from {TOY}.cli import main\n")
    # the two engines touching each other
    (pkg / "heart" / "__init__.py").write_text(f"import {TOY}.sweep\n")
    # a cycle inside one layer
    (pkg / "io" / "a.py").write_text(f"from {TOY}.io import b\n")
    (pkg / "io" / "b.py").write_text(f"def g():\n    from {TOY}.io import a\n")

    def toml_value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(toml_value(x) for x in v) + "]"
        return '"' + str(v).replace("sono3d", TOY) + '"'

    lines = ["[tool.importlinter]", f'root_package = "{TOY}"']
    for contract in contracts:
        lines.append("[[tool.importlinter.contracts]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in contract.items()]
    config = tmp / "toy.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def test_checkers_report_a_package_that_breaks_the_rules(tmp_path, monkeypatch):
    config = _write_toy(tmp_path)
    res = lint_imports(config, tmp_path, pythonpath=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert f"{TOY}.errors -> {TOY}.cli" in out, out  # upward, from inside a function
    assert f"{TOY}.heart -> {TOY}.sweep" in out, out  # siblings are independent
    assert f"{TOY}.stray" in out, out  # every top-level module must be placed in a layer
    assert f"No cycles are allowed in {TOY}.io" in out, out

    monkeypatch.syspath_prepend(str(tmp_path))
    cycles = import_cycles(TOY)
    assert cycles == [(f"{TOY}.io.a", f"{TOY}.io.b")], cycles
    assert function_level_imports(tmp_path / TOY, TOY) == [
        f"{TOY}/errors/__init__.py:2  {TOY}.cli", f"{TOY}/io/b.py:2  {TOY}.io",
    ]
