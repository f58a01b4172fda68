"""Rules of the code base that keep the layers apart (STYLE.md items 1 and 36)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ppp_dist"
USER_FACING = {"cli.py", "commands.py", "run_tasks.py", "demo.py"}  # the only modules that print to the terminal


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_library_code_logs_instead_of_printing():
    offenders = []
    for path in _modules():
        if path.name in USER_FACING:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
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


def test_paint_reads_no_prediction_and_no_graph():
    """Paint reads what vote left and a slice of the instances table: no patch source, no fragment graph."""
    text = (PACKAGE / "pipeline" / "paint.py").read_text()
    for word in ("sources", "PatchSource", "iter_edges", "fragment", "read_lut", "NetworkPrediction"):
        assert word not in text, f"pipeline/paint.py mentions {word}"
