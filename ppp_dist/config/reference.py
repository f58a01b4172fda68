"""Generate ``configs/default.toml`` and ``docs/config_reference.md`` from the config classes.

The field comments in ``sections.py`` are the single source of the documentation; a test checks that the
committed files equal what this module generates. Regenerate with ``python -m ppp_dist.config.reference``.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any, get_type_hints

import tomli_w

from ppp_dist.config.sections import PipelineConfig
from ppp_dist.config.typed import describe

_FIELD = re.compile(r"^\s+(\w+): [^=]+?(?:=.*?)?(?:#\s*(.*))?$")


def _comments(cls: type) -> dict[str, str]:
    comments = {}
    for line in inspect.getsource(cls).splitlines():
        match = _FIELD.match(line)
        if match and match.group(2):
            comments[match.group(1)] = match.group(2).strip()
    return comments


def _sections(cls: type = PipelineConfig, prefix: str = "") -> list[tuple[str, type]]:
    """(dotted name, class) for every section, depth first, in declaration order."""
    out = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            name = f"{prefix}{f.name}"
            out.append((name, hint))
            out += _sections(hint, f"{name}.")
    return out


def _toml_value(value: Any) -> str:
    """One-line TOML for a default value (arrays inline)."""
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value})[4:].strip()


def default_toml() -> str:
    lines = ["# ppp_dist reference config: every key with its default and what it means.",
             "# Generated from ppp_dist/config/sections.py by `python -m ppp_dist.config.reference`.",
             "# Spatial sizes are voxels in (Z, Y, X) order; 2D data is 3D with Z = 1.", ""]
    for name, cls in _sections():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        lines.append(f"# {doc.split('] ', 1)[-1]}")
        lines.append(f"[{name}]")
        comments = _comments(cls)
        hints = get_type_hints(cls)
        default = cls()
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                continue
            value = getattr(default, f.name)
            comment = comments.get(f.name, "")
            if isinstance(value, dict):
                lines.append(f"# [{name}.{f.name}] table: {comment}")
                continue
            lines.append(f"{f.name} = {_toml_value(value)}" + (f"  # {comment}" if comment else ""))
        lines.append("")
    return "\n".join(lines)


def reference_markdown() -> str:
    lines = ["# Config reference", "",
             "Generated from `ppp_dist/config/sections.py` (`python -m ppp_dist.config.reference`). "
             "Values are layered: defaults, then each `--config` file in order, then `--set section.key=value`. "
             "Unknown keys, wrong types and out-of-range values are all reported at once, with suggestions "
             "for misspelt keys. The resolved config is saved as `config.toml` in the experiment folder.", ""]
    for name, cls in _sections():
        lines += [f"## [{name}]", "", (cls.__doc__ or "").strip().splitlines()[0].split("] ", 1)[-1], "",
                  "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        comments, hints, default = _comments(cls), get_type_hints(cls), cls()
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                continue
            value = getattr(default, f.name)
            shown = "{}" if isinstance(value, dict) else _toml_value(value)
            lines.append(f"| `{f.name}` | {describe(hints[f.name])} | `{shown}` | "
                         f"{comments.get(f.name, '').replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


def write_files(root: Path) -> None:
    (root / "configs" / "default.toml").write_text(default_toml())
    (root / "docs" / "config_reference.md").write_text(reference_markdown())


if __name__ == "__main__":  # pragma: no cover
    write_files(Path(__file__).resolve().parents[2])
