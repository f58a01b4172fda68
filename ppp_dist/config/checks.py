"""Config checks beyond types and ranges: strings that reach job scripts, addresses, sizes, devices, the
validation sweep and databases that must outlive the process.

``[cluster]`` strings end up in batch job scripts (``#SBATCH -p <queue>``, ``#BSUB -W <walltime>``, one line
per entry of ``job_extra_directives``) that a shell runs, and an experiment folder's ``config.toml`` is loaded
automatically by ``--exp``: so whoever could edit a shared experiment could otherwise put a command into
the next job. Every such field is held to a strict pattern here, when the config loads, and control
characters (a newline above all) are refused in every string of the section.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # sections imports this module at run time
    from ppp_dist.config.sections import ClusterConfig, DatabaseConfig, EvaluationConfig, PipelineConfig

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
WALLTIME = re.compile(r"^\d{1,4}:[0-5]\d:[0-5]\d$")  # HH:MM:SS (hours may exceed 24)
MEMORY = re.compile(r"^\d+(\.\d+)?\s?([kKMGTP]i?B?|B)$")  # 8GiB, 16GB, 500MB, 64G, 1.5TiB
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+@-]{0,63}(,[A-Za-z0-9_][A-Za-z0-9_.+@-]{0,63})*$")  # queue, account
_TOKEN = r"[A-Za-z0-9_.,:=/+@%*\[\]()-]+"
# one option per entry: --qos=long, --constraint=a100, -l select=1:ncpus=8, -R "span[hosts=1]", -gpu "num=1"
DIRECTIVE = re.compile(r"^--?[A-Za-z][A-Za-z0-9_-]*(?:[= ](?:" + _TOKEN + r'|"[A-Za-z0-9_.,:=/+@%*\[\]() -]*"))?$')
ADDRESS = re.compile(r"^(?:[A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})$")  # [host]:port, ":0" = any
DEVICE = re.compile(r"^(auto|cpu|cuda(:\d{1,2})?)$")
SCHEDULER = re.compile(r"^([a-z]+://)?[A-Za-z0-9_.:/%\[\]-]+$")  # tcp://host:8786, tls://..., host:8786
MAX_SEED = 2 ** 32 - 1  # numpy's legacy seeding and most generators take 32 bits


def _text(value: str) -> str:
    """A value as it may be quoted in a message (control characters shown as escapes)."""
    return repr(value)


def cluster_problems(cluster: ClusterConfig) -> list[str]:
    """Problems of the ``[cluster]`` strings (see the module docstring)."""
    problems = []
    for f in dataclasses.fields(cluster):
        value = getattr(cluster, f.name)
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, str) and _CONTROL.search(item):
                problems.append(f"[cluster] {f.name} holds a control character (newline, tab, ...): {_text(item)}; "
                                "job scripts take one line per value")
    if problems:
        return problems
    patterns = (("walltime", WALLTIME, "HH:MM:SS, e.g. 04:00:00"),
                ("memory", MEMORY, "a size such as 16GiB"),
                ("queue", NAME, "a partition/queue name of letters, digits and _.+@- (commas between several)"),
                ("account", NAME, "an account/project name of letters, digits and _.+@-"))
    for key, pattern, what in patterns:
        value = getattr(cluster, key)
        if value and not pattern.match(value):
            problems.append(f"[cluster] {key} must be {what}, got {_text(value)}")
    if not cluster.walltime:
        problems.append("[cluster] walltime must be HH:MM:SS, e.g. 04:00:00, got ''")
    for directive in cluster.job_extra_directives:
        if not DIRECTIVE.match(directive):
            problems.append(f"[cluster] job_extra_directives entry {_text(directive)} must be one option such as "
                            '--qos=long or -R "span[hosts=1]" (no shell characters such as ; $ ` \\ \' < > |)')
    if cluster.memory_limit != "auto" and not MEMORY.match(cluster.memory_limit):
        problems.append(f"[cluster] memory_limit must be \"auto\" or a size such as 8GiB, got "
                        f"{_text(cluster.memory_limit)}")
    match = ADDRESS.match(cluster.dashboard_address)
    if not match or int(match.group("port")) > 65535:
        problems.append(f"[cluster] dashboard_address must be [HOST]:PORT, e.g. :8787 or :0 (any free port), got "
                        f"{_text(cluster.dashboard_address)}")
    if cluster.scheduler_address and not SCHEDULER.match(cluster.scheduler_address):
        problems.append(f"[cluster] scheduler_address must be an address such as tcp://HOST:8786, got "
                        f"{_text(cluster.scheduler_address)}")
    return problems


def device_problems(section: str, device: str) -> list[str]:
    """A device name torch can take: auto, cpu, cuda or cuda:N (whether it exists is checked before a run)."""
    if DEVICE.match(device):
        return []
    return [f"[{section}] device must be auto, cpu, cuda or cuda:N, got {_text(device)}"]


def database_problems(database: DatabaseConfig) -> list[str]:
    """The graph database must outlive the process: the workers, a resume and ``status`` read it."""
    path = database.path.strip()
    if database.backend == "sqlite" and (path == ":memory:" or path.lower().startswith("file:")
                                         or "mode=memory" in path.lower()):
        return [f"[database] path {_text(database.path)} is an in-memory database, which ends with the process while "
                "workers, a resume and status need it; give a file path or leave it empty (<experiment>/graph.sqlite)"]
    if _CONTROL.search(database.path) or _CONTROL.search(database.dsn):
        return ["[database] path and dsn must not hold control characters (newline, tab, ...)"]
    return []


def metric_names(evaluation: EvaluationConfig) -> list[str]:
    """The numbers ``evaluate`` reports for ``[evaluation]`` (what ``[validation] metric`` may name).

    ``tests/test_config_checks.py`` checks this list against what the evaluation really returns.
    """
    keys = lambda prefix: [f"{prefix}_{float(t):g}" for t in evaluation.thresholds]  # noqa: E731
    have = {round(float(t), 9) for t in evaluation.thresholds}
    if evaluation.criterion == "cldice":
        names = (["avF1"] if {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9} <= have else []) + keys("F1")
        names += ["C", "C_TP", "tp_rel", "cldice_tp", "FS", "FM"] + (["S"] if "avF1" in names else [])
    else:
        names = (["avS"] if {0.5, 0.6, 0.7, 0.8, 0.9} <= have else []) + keys("S") + keys("F1")
    if evaluation.isbi_scores:
        names += ["v_rand", "v_info", "v_rand_split", "v_rand_merge", "v_info_split", "v_info_merge"]
    return names + ["n_gt", "n_pred", "n_images"]


def metric_problem(config: PipelineConfig) -> str:
    """The sentence for a ``[validation] metric`` that ``[evaluation]`` does not report ("" if it does).

    Checked when the config loads for names no evaluation reports, and before validate/cross_validate run
    (``Preflight``) against the ``[evaluation]`` settings: a config that never validates may keep a metric
    of another criterion (the default avS with criterion = "cldice").
    """
    names = metric_names(config.evaluation)
    if config.validation.metric in names:
        return ""
    return (f"[validation] metric = {_text(config.validation.metric)} is not a number evaluate reports with "
            f"[evaluation] criterion = {config.evaluation.criterion!r}"
            f"{', isbi_scores = true' if config.evaluation.isbi_scores else ''} and these thresholds; choose one of "
            f"{', '.join(names)}")


def prediction_problems(config: PipelineConfig) -> list[str]:
    """[prediction] settings that depend on [model]."""
    if config.prediction.test_time_flips and config.model.head == "codes":
        return ['[prediction] test_time_flips needs predicted patches; the ppp+dec codes of [model] head = "codes" '
                "cannot be flipped"]
    return []


def validation_problems(config: PipelineConfig) -> list[str]:
    """Every value of the ``[validation.grid]`` sweep is a valid ``[vote]`` value; the metric exists."""
    from typing import get_type_hints

    from ppp_dist.config.typed import MISSING, convert

    problems: list[str] = []
    hints = get_type_hints(type(config.vote))
    base = set(config.vote.problems())
    for key, values in config.validation.grid.items():
        if key not in hints:
            continue  # reported by ValidationConfig.problems
        for value in values:
            found: list[str] = []
            converted = convert(value, hints[key], f"[validation.grid] {key} value", found)
            if converted is not MISSING:
                vote = dataclasses.replace(config.vote, **{key: converted})
                found = [p for p in vote.problems() if p not in base]
            problems += [f"[validation.grid] {key} = {value!r}: {p}" if not p.startswith("[validation") else p
                         for p in found]
    anywhere = {n for c in ("iou", "cldice")
                for n in metric_names(dataclasses.replace(config.evaluation, criterion=c, isbi_scores=True))}
    if config.validation.metric not in anywhere:  # the exact check against [evaluation]: metric_problem
        problems.append(metric_problem(config))
    return problems


__all__ = ["ADDRESS", "DEVICE", "DIRECTIVE", "MAX_SEED", "MEMORY", "NAME", "SCHEDULER", "WALLTIME", "cluster_problems",
           "database_problems", "device_problems", "metric_names", "metric_problem", "prediction_problems",
           "validation_problems"]
