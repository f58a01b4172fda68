"""Config values that must be refused when the config loads (issue #15): job-script injection through every
[cluster] string field, non-finite numbers, huge integers, devices, sizes, addresses, the validation sweep,
in-memory databases and files that are not UTF-8.

The injection part is the suite for [cluster]: every string field gets every attempt below, and each attempt
is shown to be refused before dask-jobqueue could render it (for the fields that reach job scripts, the
unchecked value is shown to become a command line of the script, so the refusal is what keeps it out).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from ppp_dist.config import ClusterConfig, EvaluationConfig, load_config
from ppp_dist.config.checks import metric_names
from ppp_dist.errors import ConfigError

ATTEMPTS = ["cpu\ntouch /tmp/pwned", "cpu\rtouch /tmp/pwned", "cpu; touch /tmp/pwned", "$(touch /tmp/pwned)",
            "`touch /tmp/pwned`", "cpu && touch /tmp/pwned", "cpu | tee /tmp/pwned", "cpu\x00x", "cpu > /tmp/pwned"]
STRING_FIELDS = [f.name for f in dataclasses.fields(ClusterConfig) if f.type in ("str", "tuple[str, ...]")]
JOB_SCRIPT_FIELDS = {"queue", "account", "walltime", "job_extra_directives"}  # verbatim; memory is parsed


def _override(field: str, value: str) -> str:
    import tomli_w

    text = tomli_w.dumps({"v": value})[4:].strip()
    return f"cluster.{field}=[{text}]" if field == "job_extra_directives" else f"cluster.{field}={text}"


def test_the_suite_covers_every_cluster_string_field():
    assert set(STRING_FIELDS) == {"scheduler_address", "memory_limit", "dashboard_address", "queue", "account",
                                  "walltime", "memory", "job_extra_directives", "interface"}


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=range(len(ATTEMPTS)))
@pytest.mark.parametrize("field", STRING_FIELDS)
def test_injection_into_every_cluster_string_field_is_refused_at_load(field, attempt):
    with pytest.raises(ConfigError, match=rf"\[cluster\] {field}"):
        load_config([], [_override(field, attempt)])


@pytest.mark.parametrize("field", sorted(JOB_SCRIPT_FIELDS))
def test_an_unchecked_value_would_be_a_command_of_the_job_script(field):
    """What the load-time check prevents: dask-jobqueue writes the value into the script verbatim."""
    from ppp_dist.pipeline.cluster import make_jobqueue_cluster

    value = "cpu\ntouch /tmp/pwned"
    setting = (value,) if field == "job_extra_directives" else value
    config = dataclasses.replace(ClusterConfig(kind="slurm", dashboard_address=":0"), **{field: setting})
    cluster = make_jobqueue_cluster(config)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "\ntouch /tmp/pwned" in script
    with pytest.raises(ConfigError):
        load_config([], [_override(field, value)])


@pytest.mark.parametrize("override", [
    'cluster.queue="gpu-a100"', 'cluster.queue="cpu,gpu"', 'cluster.account="lab42"', 'cluster.walltime="72:00:00"',
    'cluster.memory="16GiB"', 'cluster.memory="64G"', 'cluster.memory="1.5TiB"', 'cluster.memory_limit="8GiB"',
    'cluster.dashboard_address=":0"', 'cluster.dashboard_address="0.0.0.0:8787"',
    'cluster.dashboard_address="[::1]:80"',
    'cluster.job_extra_directives=["--qos=long", "--constraint=a100", "-R \\"span[hosts=1]\\"", "-l select=1:ncpus=8"]',
    'cluster.scheduler_address="tcp://10.0.0.1:8786"', 'cluster.scheduler_address="tls://node7:8786"',
    'prediction.device="cuda:1"', 'training.device="cpu"', "general.seed=4294967295",
])
def test_legal_values_still_load(override):
    load_config([], [override])


@pytest.mark.parametrize("override, message", [
    ("cluster.walltime=\"4h\"", "[cluster] walltime must be HH:MM:SS"),
    ("cluster.walltime=\"\"", "[cluster] walltime must be HH:MM:SS"),
    ("cluster.memory=\"lots\"", "[cluster] memory must be a size such as 16GiB"),
    ("cluster.memory_limit=lots", "[cluster] memory_limit must be \"auto\" or a size"),
    ("cluster.dashboard_address=not-an-address", "[cluster] dashboard_address must be [HOST]:PORT"),
    ("cluster.dashboard_address=\":99999\"", "[cluster] dashboard_address must be [HOST]:PORT"),
    ('cluster.job_extra_directives=["--qos=long --time=1"]', "must be one option such as --qos=long"),
    ('cluster.job_extra_directives=["qos=long"]', "must be one option"),
    ("data.clip_max=nan", "[data] clip_max must be a finite number, got nan"),
    ("data.clip_max=inf", "[data] clip_max must be a finite number, got inf"),
    ("training.learning_rate=nan", "[training] learning_rate must be a finite number"),
    ("vote.patch_threshold=nan", "[vote] patch_threshold must be a finite number"),
    ("data.voxel_size=[1.0, nan, 1.0]", "[data] voxel_size[1] must be a finite number"),
    ("general.seed=12345678901234567890", "[general] seed must be an integer below 2^63 in size"),
    ("general.seed=4294967296", "[general] seed must lie in [0, 4294967295]"),
    ("cluster.n_workers=100000000000000000000", "[cluster] n_workers must be an integer below 2^63"),
    ("prediction.device=gpu9", "[prediction] device must be auto, cpu, cuda or cuda:N, got 'gpu9'"),
    ("training.device=cuda:x", "[training] device must be auto, cpu, cuda or cuda:N"),
    ("database.path=:memory:", "[database] path ':memory:' is an in-memory database"),
    ("database.path='file::memory:?cache=shared'", "is an in-memory database"),
    ('validation.grid={patch_threshold=[0.5, 2.0]}', "[validation.grid] patch_threshold = 2.0: [vote] "
                                                     "patch_threshold must lie strictly between 0 and 1"),
    ('validation.grid={partition=["mutex"]}', "[validation.grid] partition value must be one of"),
    ('validation.grid={block_shape=[[0, 64, 64]]}', "[vote] block_shape must be > 0"),
    ("validation.metric=avs", "[validation] metric = 'avs' is not a number evaluate reports"),
])
def test_bad_values_are_one_sentence_at_load(override, message):
    with pytest.raises(ConfigError) as err:
        load_config([], [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_metric_of_another_criterion_loads_but_validate_refuses_it_before_running(tmp_path):
    """The default metric avS with criterion = "cldice" is fine for a config that never validates (the shipped
    sample model's); validate and cross_validate refuse it in their preflight."""
    from ppp_dist.tasks.preflight import Preflight

    config = load_config([], ['evaluation.criterion="cldice"'])
    assert config.validation.metric == "avS"
    with pytest.raises(ConfigError, match="metric = 'avS' is not a number evaluate reports with \\[evaluation\\] "
                                          "criterion = 'cldice'.*choose one of avF1"):
        Preflight(("validate",), dataclasses.replace(config, data=dataclasses.replace(
            config.data, val_data=(str(tmp_path),))), None, None).run()


@pytest.mark.parametrize("criterion", ["iou", "cldice"])
@pytest.mark.parametrize("thresholds", [(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), (0.5, 0.75)])
def test_metric_names_are_what_evaluate_reports(criterion, thresholds):
    from ppp_dist.ops.metrics_cldice import aggregate_cldice
    from ppp_dist.ops.metrics_iou import aggregate_images
    from ppp_dist.tasks.evaluation import evaluate_arrays

    gt = np.zeros((1, 1, 16, 16), np.uint16)
    gt[0, 0, 2:8, 2:8], gt[0, 0, 9:14, 9:14] = 1, 2
    result = evaluate_arrays(gt, gt, criterion=criterion, thresholds=thresholds)
    mean = (aggregate_cldice if criterion == "cldice" else aggregate_images)([result])["mean"]
    reported = {k for k, v in mean.items() if isinstance(v, (int, float)) and not math.isnan(v)}
    expected = set(metric_names(EvaluationConfig(criterion=criterion, thresholds=thresholds)))
    assert expected == reported


def test_config_file_that_is_not_utf8_is_one_sentence(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes("[vote]\n# Schwellenwert für Patches\npatch_threshold = 0.6\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.toml is not UTF-8 text \(byte 0xfc at offset 24\); save it as "
                                          "UTF-8"):
        load_config([path])
