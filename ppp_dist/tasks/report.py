"""Evaluation reports: per-image and summary CSV, results.json, results.toml, report.md and PNG plots.

``write_reports`` takes the dict that ``evaluate.evaluate_files`` builds. results.json holds every number
(None -> null); results.toml holds the same with None values left out (TOML has no null). The TOML
writer is the small one below (``to_toml``), checked against ``tomllib`` in the tests.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_reports", "to_toml", "plot_scores", "plot_overlay", "overlay_figure"]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def write_reports(results: Mapping[str, Any], out_dir: Path,
                  projections: Sequence[tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, tuple[int, int]]]
                  | None = None) -> dict[str, str]:
    """Write all report files into ``out_dir``; returns {kind: path}. ``projections`` are (GT, pred) 2D
    label images per sample for the overlays, optionally with the full (Y, X) size they were subsampled from
    as a third item (None: no overlay images)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    cldice = results["config"]["criterion"] == "cldice"
    files["per_image_csv"] = str(_write_per_image(results, out_dir / "per_image.csv"))
    files["summary_csv"] = str(_write_summary(results, out_dir / "summary.csv", cldice))
    plots: list[str] = []
    if projections is not None:
        score = "f1" if cldice else "s"
        files["scores_png"] = str(plot_scores(results, out_dir / "scores.png", score))
        for image, (gt, pred, *size) in zip(results["images"], projections):
            path = out_dir / f"overlay_{image['name']}.png"
            plot_overlay(gt, pred, path, title=image["name"], size=(size[0][0], size[0][1]) if size else None)
            plots.append(str(path))
        files["overlays"] = ";".join(plots)
    files["report_md"] = str(out_dir / "report.md")
    files["results_json"] = str(out_dir / "results.json")
    files["results_toml"] = str(out_dir / "results.toml")
    full = {**results, "files": files}
    (out_dir / "results.json").write_text(json.dumps(_jsonable(full), indent=1, allow_nan=False) + "\n")
    (out_dir / "results.toml").write_text(to_toml(_jsonable(full)))
    (out_dir / "report.md").write_text(_markdown(full, cldice, plots))
    return files


def to_toml(data: Mapping[str, Any]) -> str:
    """Serialise nested dicts/lists of str, int, float, bool to TOML 1.0; None values are left out.

    Examples
    --------
    >>> print(to_toml({"a": 1, "t": {"x": [1.5, 2.0]}, "rows": [{"k": "v"}]}), end="")
    a = 1
    <BLANKLINE>
    [t]
    x = [1.5, 2.0]
    <BLANKLINE>
    [[rows]]
    k = "v"
    """
    lines: list[str] = []
    _toml_table(data, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def plot_scores(results: Mapping[str, Any], path: Path, score: str = "s") -> Path:
    """PNG of S_t (``score="s"``) or F1_t (``"f1"``) against the threshold: each image, mean, pooled."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for image in results["images"]:
        rows = image["per_threshold"]
        ax.plot([r["threshold"] for r in rows], [r[score] for r in rows], color="0.7", lw=1, marker=".")
    for key, style in (("mean", "-o"), ("pooled", "--s")):
        rows = results[key].get("per_threshold", [])
        if rows:
            ax.plot([r["threshold"] for r in rows], [r[score] for r in rows], style, label=key, lw=2)
    ax.set_xlabel("clDice threshold" if score == "f1" else "IoU threshold")
    ax.set_ylabel("F1" if score == "f1" else "S = TP / (TP + FP + FN)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(title=f"{len(results['images'])} image(s), grey: per image", loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def overlay_figure(gt: np.ndarray, pred: np.ndarray, title: str = "", size: tuple[int, int] | None = None) -> Any:
    """The figure of :func:`plot_overlay`: three panels that keep the image's aspect ratio, axes in pixels of
    the full image (``size`` (Y, X), default the arrays' own shape, when they were subsampled)."""
    plt = _pyplot()
    height, width = size if size is not None else gt.shape
    panel = 4.0  # inches of the longer side of each panel
    scale = panel / max(height, width)
    fig, axes = plt.subplots(1, 3, figsize=(3 * width * scale + 1.5, height * scale + 1.4), dpi=100,
                             layout="constrained")
    extent = (0, width, height, 0)
    over = np.zeros(gt.shape + (3,), np.float32)
    over[..., 1] = gt != 0
    over[..., 0] = pred != 0
    over[..., 2] = pred != 0
    panels = ((_colour(gt), "ground truth"), (_colour(pred), "prediction"),
              (over, "overlay: GT green, pred magenta, both white"))
    for ax, (image, name) in zip(axes, panels):
        ax.imshow(image, interpolation="nearest", extent=extent, aspect="equal")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"x: 0 - {width} px", fontsize=8)
        ax.set_ylabel(f"y: 0 - {height} px", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title)
    return fig


def plot_overlay(gt: np.ndarray, pred: np.ndarray, path: Path, title: str = "",
                 size: tuple[int, int] | None = None) -> Path:
    """PNG with GT, prediction (random colours per id) and an overlay (GT green, prediction magenta), drawn
    with the image's aspect ratio and the axes' extent in pixels (see :func:`overlay_figure`)."""
    plt = _pyplot()
    fig = overlay_figure(gt, pred, title, size)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


# --------------------------------------------------------------------------------------------- helpers


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colour(labels: np.ndarray) -> np.ndarray:
    ids = labels.astype(np.uint64)
    h = ids * np.uint64(2654435761) % np.uint64(2**32)  # Knuth hash: neighbouring ids differ in colour
    rgb = np.stack([(h >> np.uint64(s)) & np.uint64(255) for s in (0, 8, 16)], axis=-1).astype(np.float32)
    rgb = 0.25 + 0.75 * rgb / 255.0
    rgb[labels == 0] = 0.0
    return rgb


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)
    return x


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v if x is not None) + "]"
    if isinstance(v, Mapping):
        items = (f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items() if x is not None)
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(x, Mapping) for x in v)


def _toml_table(data: Mapping[str, Any], path: list[str], lines: list[str]) -> None:
    for k, v in data.items():
        if v is None or isinstance(v, Mapping) or _is_table_array(v):
            continue
        lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v in data.items():
        if isinstance(v, Mapping):
            sub = path + [_toml_key(k)]
            lines.extend(["", f"[{'.'.join(sub)}]"])
            _toml_table(v, sub, lines)
        elif _is_table_array(v):
            sub = path + [_toml_key(k)]
            for item in v:
                lines.extend(["", f"[[{'.'.join(sub)}]]"])
                _toml_table(item, sub, lines)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _write_per_image(results: Mapping[str, Any], path: Path) -> Path:
    rows = []
    for image in results["images"]:
        for r in image["per_threshold"]:
            rows.append({"name": image["name"], "prediction": image["prediction"],
                         "ground_truth": image["ground_truth"], **r})
    _write_csv(path, rows)
    return path


def _summary_rows(results: Mapping[str, Any], cldice: bool) -> list[dict[str, Any]]:
    main = (["avF1", "C", "C_TP", "S", "tp_rel", "cldice_tp", "FS", "FM"] if cldice else ["avS"])
    out = []
    entries = [(image["name"], image) for image in results["images"]]
    entries += [("mean", results["mean"]), ("pooled", results["pooled"])]
    for name, r in entries:
        row: dict[str, Any] = {"name": name, "n_gt": r.get("n_gt"), "n_pred": r.get("n_pred")}
        row.update({k: r.get(k) for k in main})
        per_t = ("F1_",) if cldice else ("S_",)
        row.update({k: v for k, v in r.items() if k.startswith(per_t)})
        isbi = r.get("isbi") or (r if "v_rand" in r else None)
        if isbi:
            row.update({k: isbi.get(k) for k in ("v_rand", "v_info", "v_rand_split", "v_rand_merge",
                                                  "v_info_split", "v_info_merge")})
        out.append(row)
    return out


def _write_summary(results: Mapping[str, Any], path: Path, cldice: bool) -> Path:
    _write_csv(path, _summary_rows(results, cldice))
    return path


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row.get(k)) for k in fields})


def _markdown(results: Mapping[str, Any], cldice: bool, overlays: Sequence[str]) -> str:
    cfg = results["config"]
    rows = _summary_rows(results, cldice)
    cols = [c for c in rows[0] if any(r.get(c) is not None for r in rows)] if rows else []
    lines = ["# Evaluation report", "",
             f"criterion `{cfg['criterion']}`, assignment `{cfg['assignment']}`, thresholds "
             f"{cfg['thresholds']}, min_instance_size {cfg['min_instance_size']}, foreground_only "
             f"{cfg['foreground_only']}, blocks {cfg['block_shape']}", "",
             "`mean` averages the per-image values; `pooled` sums TP/FP/FN over images"
             + (" and pools GT coverages (FlyLight style)." if cldice else "."), "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    if "scores_png" in results.get("files", {}):
        lines += ["", f"![scores]({Path(results['files']['scores_png']).name})"]
    for p in overlays:
        lines += ["", f"![{Path(p).stem}]({Path(p).name})"]
    lines += ["", "Definitions: docs/metrics.md. Every number: results.json / results.toml.", ""]
    return "\n".join(lines)
