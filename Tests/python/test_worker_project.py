"""The worker's shape as a project: no import cycles, no private names imported across modules, a reason beside every
`# noqa`, and light entry points (the protocol loop and `attach` start without torch)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from workerkit import WORKER_DIR

PACKAGE = "tsexport_worker"


def modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package by dotted name, with its file and whether it is a package's __init__."""
    found: dict[str, tuple[Path, bool]] = {}
    for path in sorted((WORKER_DIR / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(WORKER_DIR).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def imports(name: str, path: Path, is_package: bool, known: dict[str, tuple[Path, bool]]) -> list[tuple[str, str]]:
    """(module, imported name) for each name this module imports from the package, wherever the import statement
    stands (top level, inside a function, under TYPE_CHECKING); the module is the submodule when the name is one."""
    package = name if is_package else name.rsplit(".", 1)[0]
    found: list[tuple[str, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target != PACKAGE and not target.startswith(PACKAGE + "."):
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                found.append((submodule, "") if submodule in known else (target, alias.name))
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names if alias.name.split(".")[0] == PACKAGE]
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycles() -> None:
    known = modules()
    assert len(known) > 30 and f"{PACKAGE}.generation.split" in known
    edges = {name: {module for module, _ in imports(name, path, is_package, known)} for name, (path, is_package) in known.items()}
    assert cycles(edges) == []


def test_no_private_name_is_imported_across_modules() -> None:
    known = modules()
    private = [
        f"{name} imports {module}.{imported}"
        for name, (path, is_package) in known.items()
        for module, imported in imports(name, path, is_package, known)
        if imported.startswith("_")
    ]
    assert private == []


NOQA = re.compile(r"#\s*noqa\b(?P<rest>.*)$")
# After the marker: a colon, the codes (comma-separated), then the reason: ` - why` or `  (why)`.
REASONED = re.compile(r"^:\s*[A-Z]+[0-9]+(\s*,\s*[A-Z]+[0-9]+)*\s+(-\s+\S|\(\S)")


def test_every_noqa_names_its_codes_and_a_reason() -> None:
    bare = []
    for path in sorted((WORKER_DIR / PACKAGE).rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = NOQA.search(line)
            if match and not REASONED.match(match.group("rest")):
                bare.append(f"{path.relative_to(WORKER_DIR)}:{number}: {line.strip()}")
    assert bare == []


def test_the_noqa_rule_refuses_bare_markers() -> None:
    assert REASONED.match(": BLE001 - the model's own code failed")
    assert REASONED.match(": F401  (registers torch.neuron)")
    assert not REASONED.match(": BLE001")
    assert not REASONED.match("")


def test_the_entry_points_import_no_torch() -> None:
    """`python -m tsexport_worker attach` must start in tens of milliseconds: the package, its entry point, the
    protocol loop and the warm module import neither torch nor transformers."""
    code = (
        "import sys\n"
        "import tsexport_worker.__main__, tsexport_worker.serve, tsexport_worker.runtime.warm\n"
        "print(sorted(m for m in ('torch', 'transformers', 'safetensors') if m in sys.modules))\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(WORKER_DIR)}, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "[]"


def test_the_project_installs_every_module(tmp_path: Path) -> None:
    """The wheel built from Sources/Worker's pyproject.toml holds every module of the package."""
    source = tmp_path / "src"
    subprocess.run(["cp", "-r", str(WORKER_DIR), str(source)], check=True)
    subprocess.run(["find", str(source), "-name", "__pycache__", "-prune", "-exec", "rm", "-rf", "{}", "+"], check=True)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "wheel"),
         str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "wheel").glob("tsexport_worker-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packaged = {name for name in archive.namelist() if name.startswith(f"{PACKAGE}/")}
    expected = {str(path.relative_to(WORKER_DIR)) for path in (WORKER_DIR / PACKAGE).rglob("*.py")}
    assert len(expected) > 30
    assert packaged == expected
