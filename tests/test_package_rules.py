"""Rules of the code base that keep the layers apart (STYLE.md items 1 and 36)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ppp_dist"
USER_FACING = {"cli.py"}  # prints anywhere; the task modules print only in their run functions (below)
_PRINTING_FUNCTIONS = ("run", "_run", "_print", "_warn")  # name prefixes of the functions that may print


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _print_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, enclosing top-level function or "") of every print() call of a module."""
    out = []
    for top in getattr(tree, "body", []):
        name = top.name if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef)) else ""
        for node in ast.walk(top):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                out.append((node.lineno, name))
    return out


def test_library_code_logs_instead_of_printing():
    """Only the CLI and the tasks' run functions talk to the terminal; library code logs."""
    offenders = []
    for path in _modules():
        if path.name in USER_FACING:
            continue
        in_tasks = path.parent.name == "tasks"
        for line, function in _print_calls(ast.parse(path.read_text())):
            if not (in_tasks and function.startswith(_PRINTING_FUNCTIONS)):
                offenders.append(f"{path.relative_to(PACKAGE)}:{line}")
    assert not offenders, f"print() in library code: {offenders}"


def test_pure_array_layer_imports_no_io_or_scheduling():
    forbidden = ("zarr", "dask", "distributed", "ppp_dist.io", "ppp_dist.config", "sqlite3", "psycopg2")
    offenders = []
    for path in sorted((PACKAGE / "ops").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in forbidden or
                          any(n.startswith(f) for f in forbidden if "." in f)]
    assert not offenders, f"ops/ must stay pure array code: {offenders}"


def test_no_logging_configuration_at_import():
    for path in _modules():
        if path.name == "logs.py":
            continue
        assert "basicConfig" not in path.read_text(), f"{path.name} configures logging"


def _string_constants(path: Path) -> list[tuple[int, str]]:
    """Every string literal of a module (f-strings' literal parts too), with its line."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append((node.lineno, node.value))
    return out


def test_sql_lives_in_io_only():
    """Every SQL statement is in ppp_dist/io/ (the graph store and the database); stages call named methods."""
    import re

    # the project writes SQL keywords in capitals; prose starting with "Drop ... set" is not SQL
    sql = re.compile(r"^\s*(SELECT|INSERT|DELETE|UPDATE|CREATE|DROP|ALTER|WITH)\s+\S+.*\b(FROM|INTO|TABLE|SET|AS|"
                     r"WHERE)\b", re.DOTALL)
    offenders = []
    for path in _modules():
        if path.relative_to(PACKAGE).parts[0] == "io":
            continue
        text = path.read_text()
        offenders += [f"{path.relative_to(PACKAGE)}:{line}" for line, value in _string_constants(path)
                      if sql.match(value)]
        offenders += [f"{path.relative_to(PACKAGE)}: .db." for _ in [0] if "store.db." in text or ".db.execute" in text]
    assert not offenders, f"SQL outside ppp_dist/io/: {offenders}"


# a file name that other modules give their own files too: name -> the module that may spell it (report.py names
# its JSON so in any folder it is given, e.g. <exp>/evaluation/; validate's val/results.json is ExperimentPaths')
_SHARED_FILE_NAMES = {"results.json": "tasks/report.py"}


def test_experiment_folder_names_live_in_experiment_py():
    """Every name inside an experiment folder is spelled in experiment.py only (its constants and
    ExperimentPaths): no other module joins a path with one of them, spells one of its file names, or builds a
    checkpoint file name."""
    owner = PACKAGE / "experiment.py"
    tree = ast.parse(owner.read_text())
    names = {node.right.value for node in ast.walk(tree) if isinstance(node, ast.BinOp)
             and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant)
             and isinstance(node.right.value, str)}
    names |= {node.value.value for node in tree.body if isinstance(node, ast.Assign)
              and all(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets)
              and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}
    assert {"train", "val", "pipeline", "logs", "prediction.zarr", "instances.zarr", "graph.sqlite", "best.json",
            "metrics.csv", "run.log", "config.toml", "secrets.toml"} <= names, "the scan missed the owner's names"
    files = {n for n in names if "." in n}
    offenders = []
    for path in _modules():
        if path == owner:
            continue
        where = path.relative_to(PACKAGE)
        shared = {n for n, module in _SHARED_FILE_NAMES.items() if str(where) == module}
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant)
                    and node.right.value in names - shared):
                offenders.append(f"{where}:{node.lineno} / {node.right.value!r}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in files - shared:
                offenders.append(f"{where}:{node.lineno} {node.value!r}")
            elif isinstance(node, ast.JoinedStr) and any(isinstance(v, ast.Constant) and v.value == "checkpoint_"
                                                         for v in node.values):
                offenders.append(f"{where}:{node.lineno} f'checkpoint_...'")
    assert not offenders, f"experiment-folder names outside experiment.py (use ExperimentPaths): {offenders}"


def test_paint_reads_no_prediction_and_no_graph():
    """Paint reads what vote left and a slice of the instances table: no patch source, no fragment graph."""
    import re

    for module in ("paint.py", "relabel.py"):
        text = (PACKAGE / "pipeline" / module).read_text()
        for word in ("sources", "PatchSource", "iter_edges", "fragment", "read_lut", "NetworkPrediction"):
            assert not re.search(rf"\b{word}", text), f"pipeline/{module} mentions {word}"


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The ppp_dist modules ``path`` imports (at module level or inside functions; not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", "") == "TYPE_CHECKING" for b in node.body for n in ast.walk(b)}
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
            targets = submodules if len(submodules) == len(node.names) else [base, *submodules]
        else:
            continue
        found.update(t for t in targets if t in modules and t not in (name, "ppp_dist"))
    return found


def test_no_import_cycles():
    """No module imports (even inside a function) a module that imports it back: layers stay layers."""
    paths = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in _modules()}
    graph = {name: _imports(path, set(paths)) for name, path in paths.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*trail[trail.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, f"import cycles: {cycles}"


def test_package_root_holds_few_modules():
    """The root keeps the CLI and what every layer shares; the rest lives in config/, io/, ops/, learning/,
    pipeline/, tasks/ and data/."""
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= 10, root


def test_every_task_module_exposes_the_task_interface():
    from ppp_dist import tasks

    names = [*tasks.CHAIN, *tasks.COMMANDS]
    for name in names:
        module = tasks.task(name)
        assert module.NAME == name, module.__name__
        assert module.SUMMARY and "\n" not in module.SUMMARY and len(module.SUMMARY) < 100, module.__name__
        assert isinstance(module.UPSTREAM, tuple) and set(module.UPSTREAM) <= set(tasks.CHAIN), module.__name__
        assert callable(module.preflight) and callable(module.run), module.__name__
        if module.UPSTREAM:  # what it reads when no upstream task runs before it (preflight's messages)
            assert getattr(module, "INPUT", ""), module.__name__
    helpers = {"__init__", "base", "chain", "preflight", "evaluation", "report", "convert", "image_input"}
    files = {p.stem for p in (PACKAGE / "tasks").glob("*.py")}
    assert files == helpers | {tasks.COMMANDS.get(n, n) for n in names}, "a module in tasks/ is neither a task " \
        "nor a documented helper (tasks/__init__.py)"


def test_help_imports_no_heavy_library():
    """``ppp-dist --help`` builds the parser from every task module: they import torch, dask, numba, zarr,
    scipy and matplotlib only inside their functions."""
    import subprocess
    import sys

    code = ("import sys; from ppp_dist.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'dask', 'distributed', 'numba', 'zarr', 'scipy', 'matplotlib') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
