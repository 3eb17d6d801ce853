"""The package's layers: lazy heavy imports, no module importing a layer above its own, and no
import cycle (among ``jobs/`` modules above all, where one lived)."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import rs_geo_edit

PACKAGE = Path(rs_geo_edit.__file__).parent
HEAVY = ("torch", "rasterio", "open_clip", "fiona", "pyogrio", "geopandas")

# Each group may import only itself and groups to its right in this list; a group is a module
# name or a package prefix (the longest prefix wins). The eval command (evaluate) sits above the
# pipeline, the metrics of eval below it; the pipeline's contract sits below the editors, which
# implement it.
ORDER = [
    ("cli", "jobs", "batch", "pairs", "executors"),
    ("api", "options", "evaluate"),
    ("pipeline",),
    ("editors",),
    ("pipeline.contract",),
    ("patch", "model", "guidance", "blend", "eval"),
    ("config",),
    ("geo", "imaging", "files", "progress", "errors"),
]
# The model layer is SinDDM alone: no options, no modes, no CLIP.
MODEL_NEVER = ("config", "guidance", "editors", "patch")


def _group(module: str) -> int:
    best, rank = -1, None
    for i, names in enumerate(ORDER):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, rank = len(name), i
    return rank


def _package_imports(path: Path, module: str, runtime_only: bool = False):
    """(imported module, names) for each import of the package in ``path``, at any depth of the
    file; with ``runtime_only``, not those under ``if TYPE_CHECKING:`` (they never run)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for stmt in node.body for n in ast.walk(stmt)} if runtime_only else set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                target = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            elif (node.module or "").startswith("rs_geo_edit."):
                target = node.module[len("rs_geo_edit."):]
            else:
                continue
            yield target, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("rs_geo_edit."):
                    yield a.name[len("rs_geo_edit."):], []


def _imports(path: Path, module: str) -> set[str]:
    """Names of the package that ``path`` imports (``from .x import y`` gives ``x`` and ``x.y``,
    so a submodule imported by name counts as itself)."""
    found = set()
    for target, names in _package_imports(path, module):
        found.add(target)
        found.update(f"{target}.{name}" if target else name for name in names)
    return {f for f in found if f}


def _runtime_imports(path: Path, module: str, known: set[str]) -> set[str]:
    """The modules of the package that ``path`` imports when it runs: ``from .x import y`` is
    ``x.y`` when that is a module, else ``x``."""
    found = set()
    for target, names in _package_imports(path, module, runtime_only=True):
        if not names:   # import rs_geo_edit.x
            found.add(target)
        for name in names:
            sub = f"{target}.{name}" if target else name
            found.add(sub if sub in known else target)
    return {f for f in found if f in known and f != module}


def _import_graph(prefix: str = "") -> dict[str, set[str]]:
    """Module -> the modules it imports, for the modules whose name starts with ``prefix``."""
    modules = dict(_modules())
    known = set(modules)
    return {m: {t for t in _runtime_imports(p, m, known) if t.startswith(prefix)}
            for m, p in modules.items() if m.startswith(prefix)}


def _a_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` as [a, b, ..., a], or [] when there is none."""
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return []

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return []


def test_the_cycle_finder_finds_a_cycle():
    assert _a_cycle({"jobs.a": {"jobs.b"}, "jobs.b": {"jobs.c"}, "jobs.c": {"jobs.a"}}) == \
        ["jobs.a", "jobs.b", "jobs.c", "jobs.a"]
    assert _a_cycle({"jobs.a": {"jobs.b"}, "jobs.b": set()}) == []
    assert "jobs.worker" in _import_graph("jobs")["jobs.supervisor"]  # lazy imports count: they run too


def test_no_import_cycle_among_jobs_modules():
    cycle = _a_cycle(_import_graph("jobs"))
    assert not cycle, f"jobs/ modules import each other in a loop: {' -> '.join(cycle)}"


def test_no_import_cycle_in_the_package():
    cycle = _a_cycle(_import_graph())
    assert not cycle, f"modules import each other in a loop: {' -> '.join(cycle)}"


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            yield ".".join(parts), path


@pytest.mark.parametrize("module,path", list(_modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_no_module_imports_a_layer_above_it(module, path):
    rank = _group(module)
    if rank is None:
        pytest.skip(f"{module} is in no layer")
    above = sorted(t for t in _imports(path, module) if _group(t) is not None and _group(t) < rank)
    assert not above, f"{module} imports {above}, which sit above it"


@pytest.mark.parametrize("module,path", [m for m in _modules() if m[0].startswith("model")], ids=lambda v: v
                         if isinstance(v, str) else "")
def test_model_never_imports_config_guidance_or_editors(module, path):
    reached = sorted(t for t in _imports(path, module) if t.split(".")[0] in MODEL_NEVER)
    assert not reached, f"{module} imports {reached}"


def test_every_engine_is_registered():
    from rs_geo_edit.config import ENGINES
    from rs_geo_edit.editors import ENGINE_CLASSES

    assert set(ENGINES) == set(ENGINE_CLASSES)


def test_import_loads_no_heavy_library():
    code = ("import sys, json, rs_geo_edit, rs_geo_edit.cli; "
            f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_edit_scene_is_the_package_level_call():
    from rs_geo_edit.api import edit_scene

    assert rs_geo_edit.edit_scene is edit_scene
    with pytest.raises(AttributeError):
        rs_geo_edit.no_such_thing  # noqa: B018
