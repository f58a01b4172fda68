"""The security rows of the bad-input sweep (issue #15): attacks and faults at the command line, each refused in
one sentence with exit code 2 before anything is written. Run by ``test_bad_input_sweep.py`` with the rows of
``_sweep_table.py``; ``docs/errors.md`` has them in prose.

* a second run on an experiment that a live run holds (``tests/test_lock.py`` has the two-process test and
  the take-over of stale locks);
* job-script injection through every ``[cluster]`` string field, by ``--set`` and by an experiment's saved
  config (``tests/test_config_checks.py`` and ``tests/test_batch_injection.py`` have the whole suite);
* a database that dies with the process;
* DSN passwords, which no sentence shows (``tests/test_redaction.py`` checks logs and saved configs);
* ``--scheduler`` pointing at something that is not a dask scheduler.
"""

from __future__ import annotations

from _hostile_inputs import exp_injected_config, exp_locked, http_server, silent_socket
from _sweep_inputs import LABEL, ON_PRED
from _sweep_table import row

INJECTION = {
    "queue": "cluster.queue='cpu\\ntouch /tmp/pwned'",
    "account": "cluster.account='lab; touch /tmp/pwned'",
    "walltime": "cluster.walltime='04:00:00\\ntouch /tmp/pwned'",
    "memory": "cluster.memory='16GiB $(touch /tmp/pwned)'",
    "job_extra_directives": "cluster.job_extra_directives='[\"--qos=long\\ntouch /tmp/pwned\"]'",
    "memory_limit": "cluster.memory_limit='8GiB`touch /tmp/pwned`'",
    "dashboard_address": "cluster.dashboard_address=':8787 && touch /tmp/pwned'",
    "scheduler_address": "cluster.scheduler_address='tcp://h:8786;touch /tmp/pwned'",
}

SECURITY_ROWS = [
    # -- one run at a time per experiment
    row("lock-experiment-in-use", "label --exp exp --input {data}/pred.zarr", 2,
        "experiment exp is in use by process {pid} on {host} (ppp-dist infer, started 2030-01-01T00:00:00+00:00), "
        "alive ", setup=exp_locked),
    row("lock-experiment-in-use-demo", "demo --exp exp", 2, "experiment exp is in use by process {pid}",
        setup=exp_locked),
    row("lock-status-shows-the-holder", "status exp", 0, "lock     running: process {pid} on {host} (ppp-dist infer",
        stream="stdout", setup=exp_locked),
    row("database-in-memory", f"{ON_PRED} --set database.path=:memory:", 2,
        "[database] path ':memory:' is an in-memory database, which ends with the process"),
    row("database-in-memory-uri", f"{ON_PRED} --set database.path='file::memory:?cache=shared'", 2,
        "is an in-memory database"),

    # -- job-script injection: every [cluster] string field, and a shared experiment's config.toml
    *[row(f"inject-cluster-{field.replace('_', '-')}", f"{ON_PRED} --set {override}", 2, f"[cluster] {field} ")
      for field, override in INJECTION.items()],
    row("inject-through-saved-config", "label --exp exp --input {data}/pred.zarr", 2,
        "[cluster] queue holds a control character (newline, tab, ...): 'cpu\\ntouch /tmp/pwned'; job scripts take "
        "one line per value (from config file exp/config.toml)", setup=exp_injected_config),

    # -- passwords: the sentence names the database without it (both DSN forms)
    row("secret-key-value-dsn", f"{ON_PRED} --set database.backend=postgres "
        "--set database.dsn='host=127.0.0.1 port=1 user=me password=s3cret dbname=graph'", 2,
        "cannot reach PostgreSQL at host=127.0.0.1 port=1 user=me dbname=graph ("),
    row("secret-show-config-masks", "show-config --set database.dsn='host=db1 user=me password=s3cret dbname=g'", 0,
        'dsn = "host=db1 user=me password=*** dbname=g"', stream="stdout"),

    # -- something that is not a dask scheduler: one sentence within seconds, no experiment folder
    row("scheduler-is-an-http-server", f"{ON_PRED} --scheduler tcp://127.0.0.1:{{port}}", 2,
        "tcp://127.0.0.1:{port} is not a dask scheduler: it did not answer the dask protocol within 3 s",
        setup=http_server, inproc=True),
    row("scheduler-is-a-silent-socket", f"{LABEL} --input {{data}}/pred.zarr --scheduler 127.0.0.1:{{port}}", 2,
        "127.0.0.1:{port} is not a dask scheduler: it did not answer the dask protocol", setup=silent_socket,
        inproc=True),
]
