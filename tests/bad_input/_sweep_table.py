"""The table of the bad-input sweep: one row per documented behaviour (``test_bad_input_sweep.py`` runs them;
``docs/errors.md`` is this table in prose)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _hostile_inputs import (
    exp_float16_prediction_wanted,
    exp_id_not_utf8,
    exp_truncated_instances,
    full_disk,
    read_only_experiment,
    read_only_status,
    relabelled_two,
    resumes_after_space_is_freed,
)
from _sweep_inputs import (
    EVALUATE,
    INPROCESS,
    LABEL,
    ON_PRED,
    TINY,
    a_file,
    all_zero_instances,
    exp_checkpoint_5,
    exp_empty,
    exp_evaluation_file,
    exp_garbage_checkpoint,
    exp_instances_file,
    exp_no_config,
    exp_typo_config,
    exp_with_outputs,
    failed_block_recorded,
    nothing_written,
    one_vote_block,
    other_experiments_database,
    postgres_foreign_schema,
    postgres_other_experiment,
    prediction_written,
    read_only_root,
    samples,
    short_connect_timeout,
    too_large_to_scan,
)


def _has_cuda_7() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.device_count() > 7


@dataclass(frozen=True)
class Row:
    argv: str
    code: int
    expected: str
    setup: Callable[..., Any] | None = None
    inproc: bool = False
    check: Callable[[Path, str, str], None] | None = None
    stream: str = "stderr"  # where `expected` appears for exit code 0
    marks: tuple = field(default=())
    leaves: bool = False  # exit code 2 after writing (a full disk): `check` instead of "nothing written"


def row(id_: str, argv: str, code: int, expected: str, **kw: Any):
    marks = kw.pop("marks", ())
    return pytest.param(Row(argv, code, expected, **kw), id=id_, marks=marks)


TASKS_FOR_TYPO = ["train", "validate", "predict", "decode", "label", "postprocess", "evaluate", "cross_validate",
                  "visualize", "infer", "all", "plan", "show-config", "demo"]

ROWS = [
    # -- usage: the command line itself
    row("usage-unknown-command", "frobnicate", 2, "invalid choice: 'frobnicate'"),
    row("usage-no-command", "", 2, "no command given"),
    row("usage-do-unknown-task", "--do trian --root runs", 2, "unknown: trian"),
    row("usage-do-without-tasks", "--do --root runs", 2, "--do needs task names"),
    row("usage-option-without-value", "label --input", 2, "argument -i/--input: expected one argument"),
    row("usage-root-and-exp", "label --root runs --exp runs", 2, "argument -e/--exp: not allowed with argument"),
    row("usage-workers-not-a-number", "demo --workers many", 2, "invalid int value: 'many'"),

    # -- config files, keys, types and values (one row per entry point for the misspelt key below)
    row("config-file-missing", f"{LABEL} -c {{data}}/missing.toml --input {{data}}/pred.zarr", 2,
        "missing.toml does not exist; pass an existing TOML file"),
    row("config-not-toml", f"{LABEL} -c {{data}}/broken.toml --input {{data}}/pred.zarr", 2, "is not valid TOML"),
    row("config-unknown-section", f"{LABEL} --set voet.patch_threshold=0.5 --input {{data}}/pred.zarr", 2,
        "unknown section [voet] (did you mean 'vote'?) (from --set voet.patch_threshold=0.5)"),
    row("config-wrong-type", f"{LABEL} --set vote.patch_threshold=high --input {{data}}/pred.zarr", 2,
        "[vote] patch_threshold must be a number, got 'high'"),
    row("config-out-of-range", f"{LABEL} --set vote.patch_threshold=1.5 --input {{data}}/pred.zarr", 2,
        "patch_threshold must lie strictly between 0 and 1, got 1.5"),
    row("config-not-a-choice", f"{LABEL} --set vote.selection=best --input {{data}}/pred.zarr", 2,
        "[vote] selection must be one of 'local', 'greedy', got 'best'"),
    row("config-wrong-length", f"{LABEL} --set model.patch_shape=[5,5] --input {{data}}/pred.zarr", 2,
        "[model] patch_shape must be a list of 3 values"),
    row("config-even-patch-shape", f"{LABEL} --set model.patch_shape=[1,4,4] --input {{data}}/pred.zarr", 2,
        "[model] patch_shape must be odd on every axis, got (1, 4, 4)"),
    row("config-set-without-value", f"{LABEL} --set vote.patch_threshold --input {{data}}/pred.zarr", 2,
        "must look like section.key=value"),
    row("config-all-problems-at-once", f"{LABEL} -c {{data}}/typo.toml --set vote.consensus=max", 2,
        "2 problems in the config: unknown key [vote] 'patch_treshold' (did you mean 'patch_threshold'?); [vote] "
        "consensus must be one of"),
    row("config-greedy-is-not-blockwise", f"{LABEL} --set vote.selection=greedy --input {{data}}/pred.zarr", 2,
        'selection = "greedy" is sequential and not block invariant'),
    row("config-dilate-is-not-blockwise", f"{LABEL} --set postprocess.dilate=1 --input {{data}}/pred.zarr", 2,
        "[postprocess] dilate is not implemented blockwise yet"),
    row("config-scheduler-kind-without-address", f"{LABEL} --set cluster.kind=scheduler --input {{data}}/pred.zarr",
        2, '[cluster] kind = "scheduler" needs scheduler_address'),
    row("config-decode-needs-codes-head", "decode --root runs --input {data}/pred.zarr", 2,
        "decode needs [model] head = 'codes'"),
    row("config-saved-config-of-experiment", "label --exp exp", 2,
        "unknown key [postprocess] 'min_instance_sise' (did you mean 'min_instance_size'?) (from config file "
        "exp/config.toml)", setup=exp_typo_config),
    row("config-status-of-experiment-with-bad-config", "status exp", 2, "(from config file exp/config.toml)",
        setup=exp_typo_config),
    *[row(f"config-misspelt-key-{task}", f"{task} -c {{data}}/typo.toml --root runs", 2,
          "unknown key [vote] 'patch_treshold' (did you mean 'patch_threshold'?) (from config file")
      for task in TASKS_FOR_TYPO if task not in ("plan", "show-config")],
    row("config-misspelt-key-plan", "plan -c {data}/typo.toml --input {data}/raw.zarr/raw", 2,
        "did you mean 'patch_threshold'?"),
    row("config-misspelt-key-show-config", "show-config -c {data}/typo.toml", 2, "did you mean 'patch_threshold'?"),
    row("config-misspelt-key-do", "--do predict label -c {data}/typo.toml --root runs", 2,
        "did you mean 'patch_threshold'?"),

    # -- wrong or missing paths: zarr stores, keys inside them, folders, samples
    row("path-store-missing-predict", "predict --root runs --input {data}/missing.zarr/raw", 2,
        "missing.zarr does not exist (from '"),
    row("path-store-missing-label", f"{LABEL} --input {{data}}/missing.zarr", 2, "missing.zarr does not exist"),
    row("path-store-missing-postprocess", "postprocess --root runs --input {data}/missing.zarr/instances", 2,
        "missing.zarr does not exist"),
    row("path-store-missing-plan", "plan --input {data}/missing.zarr/raw", 2, "missing.zarr does not exist"),
    row("path-store-missing-ground-truth", f"{EVALUATE} --input {{data}}/labels.zarr/pred --gt {{data}}/gt.zarr/gt",
        2, "zarr store {data}/gt.zarr does not exist"),
    row("path-key-missing-raw", f"predict {TINY} --root runs --input {{data}}/raw.zarr/rwa", 2,
        "no array 'rwa' in {data}/raw.zarr; did you mean 'raw'?"),
    row("path-key-missing-ground-truth", f"{EVALUATE} --input {{data}}/labels.zarr/pred --gt {{data}}/labels.zarr/gtt",
        2, "no array 'gtt' in {data}/labels.zarr; did you mean 'gt'?"),
    row("path-group-instead-of-array", f"predict {TINY} --root runs --input {{data}}/raw.zarr", 2,
        "'/' in {data}/raw.zarr is a group, not an array; name one of its arrays"),
    row("path-array-instead-of-group", f"{LABEL} --input {{data}}/pred.zarr/patches", 2,
        "pred.zarr/patches is an array, not a group; give the group that holds it"),
    row("path-not-a-prediction-group", f"{LABEL} --input {{data}}/raw.zarr", 2,
        "{data}/raw.zarr is not a prediction group: it holds empty, five_d, flat, inf, nan, raw, two_channels but no "
        "patches"),
    row("path-codes-without-patches", f"{LABEL} --input {{data}}/codes.zarr", 2,
        "{data}/codes.zarr holds codes but no patches; run decode first"),
    row("path-store-without-suffix", "plan --input {data}/plain/raw", 2, "cannot tell where the zarr store ends"),
    row("path-experiment-missing", "label --exp nope", 2, "experiment folder nope does not exist; use --root"),
    row("path-experiment-without-config", "label --exp exp", 2, "experiment folder exp has no config.toml",
        setup=exp_no_config),
    row("path-experiment-without-prediction", "label --exp exp", 2,
        "label needs a prediction group (patches + numinst) (exp holds none)", setup=exp_empty),
    row("path-label-without-input", LABEL, 2, "label needs a prediction group (patches + numinst): pass --input"),
    row("path-predict-without-input", f"predict {TINY} --root runs", 2, "predict needs a raw volume: pass --input"),
    row("path-evaluate-without-ground-truth", f"{EVALUATE} --input {{data}}/labels.zarr/pred", 2,
        "evaluate needs the ground truth: pass --gt"),
    row("path-evaluate-without-prediction", f"{EVALUATE} --gt {{data}}/labels.zarr/gt", 2,
        "evaluate needs predicted labels: pass --input"),
    row("path-visualize-without-input", "visualize --root runs", 2, "visualize needs a prediction group"),
    row("path-train-without-samples", f"train {TINY} --root runs", 2, "train needs samples: set [data] train_data"),
    row("path-train-sample-missing", f"train {TINY} --root runs --set 'data.train_data=[\"{{data}}/nope.zarr\"]'", 2,
        "[data] train_data entry {data}/nope.zarr does not exist"),
    row("path-train-sample-without-gt", f"train {TINY} --root runs {samples('no_gt')}",
        2, "no array 'volumes/gt_instances' in {data}/samples/no_gt.zarr"),
    row("path-validate-without-samples", f"validate {TINY} --root runs", 2, "validate needs samples"),
    row("path-validate-without-checkpoints", f"validate {TINY} --root runs {samples('good', 'val_data')}",
        2, "validate needs checkpoints but a new experiment (--root) has none"),
    row("path-cross-validate-without-folds", f"cross_validate {TINY} --root runs", 2,
        "cross_validate needs both folds: set [data] val_data and test_data"),
    row("path-status-missing", "status nope", 2, "experiment folder nope does not exist"),
    row("path-status-not-an-experiment", "status .", 2, "is not a ppp_dist experiment folder (no config.toml)"),
    row("path-demo-experiment-missing", "demo --exp nope", 2, "experiment folder nope does not exist; use --root"),

    # -- wrong shapes: channels, dimensions, patch channels, ground truth vs prediction
    row("shape-raw-channels", f"predict {TINY} --root runs --input {{data}}/raw.zarr/two_channels", 2,
        "raw.zarr/two_channels has 2 channels but [data] num_channels = 1"),
    row("shape-raw-2d-array", f"predict {TINY} --root runs --input {{data}}/raw.zarr/flat", 2,
        "raw.zarr/flat has 2 dimensions with shape (16, 16); predict needs a (C, Z, Y, X) or (Z, Y, X) raw volume"),
    row("shape-raw-5d-array", f"predict {TINY} --root runs --input {{data}}/raw.zarr/five_d", 2,
        "raw.zarr/five_d has 5 dimensions"),
    row("shape-plan-raw-channels", "plan --input {data}/raw.zarr/two_channels", 2,
        "has 2 channels but [data] num_channels = 1"),
    row("shape-plan-raw-2d-array", "plan --input {data}/raw.zarr/flat", 2, "has 2 dimensions with shape (16, 16)"),
    row("shape-train-sample-channels",
        f"train {TINY} --root runs {samples('two_channels')}", 2,
        "two_channels.zarr/volumes/raw has 2 channels but [data] num_channels = 1"),
    row("shape-train-ground-truth-vs-raw",
        f"train {TINY} --root runs {samples('gt_shape')}", 2,
        "gt_shape.zarr/volumes/gt_instances has spatial shape (2, 24, 24) but the raw"),
    row("shape-prediction-patch-channels", f"{LABEL} --input {{data}}/p9.zarr", 2,
        "p9.zarr/patches has shape (9, 1, 24, 24); expected (25, Z, Y, X) for model.patch_shape (1, 5, 5)"),
    row("shape-prediction-patch-channels-in-process", f"{INPROCESS} --input {{data}}/p9.zarr", 2,
        "expected (25, Z, Y, X) for model.patch_shape (1, 5, 5)"),
    row("shape-prediction-patch-channels-visualize", f"visualize {TINY} --root runs --input {{data}}/p9.zarr", 2,
        "p9.zarr/patches has shape (9, 1, 24, 24); expected (25, Z, Y, X)"),
    row("shape-prediction-numinst-vs-patches", f"{LABEL} --input {{data}}/mismatch.zarr", 2,
        "numinst/fg has shape (3, 1, 20, 20) but patches cover (1, 24, 24)"),
    row("shape-ground-truth-vs-prediction",
        f"{EVALUATE} --input {{data}}/labels.zarr/pred --gt {{data}}/labels.zarr/small", 2,
        "the ground truth {data}/labels.zarr/small has spatial shape (1, 12, 12) but the predicted labels"),
    row("shape-ground-truth-vs-chain", f"--do label evaluate {LABEL[6:]} --input {{data}}/pred.zarr "
        "--gt {data}/labels.zarr/small", 2,
        "the ground truth {data}/labels.zarr/small has spatial shape (1, 12, 12) but the prediction"),
    row("shape-ground-truth-vs-raw-infer", f"infer {TINY} --root runs --input {{data}}/raw.zarr/raw "
        "--gt {data}/labels.zarr/gt", 2,
        "the ground truth {data}/labels.zarr/gt has spatial shape (1, 24, 24) but the raw volume"),
    row("shape-labels-not-integer", f"{EVALUATE} --input {{data}}/labels.zarr/float --gt {{data}}/labels.zarr/gt", 2,
        "labels.zarr/float: labels must have an integer dtype, got float32"),
    row("shape-postprocess-not-instance-channels", "postprocess --root runs --input {data}/raw.zarr/flat", 2,
        "has shape (16, 16); postprocess needs instance channels (K, Z, Y, X)"),
    row("shape-postprocess-not-integer", "postprocess --root runs --input {data}/labels.zarr/float", 2,
        "has dtype float32; postprocess needs integer instance labels"),

    # -- empty volumes (an axis of length 0)
    row("empty-raw-predict", f"predict {TINY} --root runs --input {{data}}/raw.zarr/empty", 2,
        "raw.zarr/empty is empty: its shape (1, 0, 16, 16) has an axis of length 0"),
    row("empty-raw-plan", "plan --input {data}/raw.zarr/empty", 2, "raw.zarr/empty is empty"),
    row("empty-prediction-label", f"{LABEL} --input {{data}}/empty_pred.zarr", 2,
        "empty_pred.zarr/patches is empty: its shape (25, 1, 0, 24)"),
    row("empty-ground-truth", f"{EVALUATE} --input {{data}}/labels.zarr/pred --gt {{data}}/labels.zarr/empty", 2,
        "labels.zarr/empty is empty"),
    row("empty-instances-postprocess", "postprocess --root runs --input {data}/labels.zarr/empty", 2,
        "labels.zarr/empty is empty"),

    # -- all-background volumes: no error; label warns in one line that it found nothing
    row("background-label-in-process", f"{INPROCESS} --input {{data}}/background.zarr", 0,
        "ppp-dist: warning: label found no instances in {data}/background.zarr", check=all_zero_instances),
    row("background-label-blockwise", f"{LABEL} --input {{data}}/background.zarr", 0,
        "ppp-dist: warning: label found no instances in {data}/background.zarr", check=all_zero_instances),
    row("background-prediction-evaluate", f"{EVALUATE} --input {{data}}/labels.zarr/background "
        "--gt {data}/labels.zarr/gt", 0, "evaluation: avS 0.0000, S_0.5 0.0000", stream="stdout"),
    row("background-postprocess", "postprocess --root runs --input {data}/labels.zarr/background", 0,
        "postprocess: 0 -> 0 instances", stream="stdout"),

    # -- volumes smaller than one block / one network tile: one (clipped) block, no error
    row("small-volume-label-blockwise", f"{LABEL} --set vote.block_shape=[64,64,64] --input {{data}}/pred.zarr", 0,
        "label: 2 instances (blockwise)", stream="stdout", check=one_vote_block),
    row("small-volume-plan", "plan --input {data}/raw.zarr/raw --set vote.block_shape=[64,64,64]", 0,
        "vote           1      (4, 16, 16)", stream="stdout", check=nothing_written),
    row("small-volume-predict", f"predict {TINY} --root runs --input {{data}}/raw.zarr/raw", 0, "predict: ",
        stream="stdout", inproc=True, check=prediction_written),

    # -- NaN and infinite values (floating-point inputs are scanned before anything is written)
    row("nan-raw-predict", f"predict {TINY} --root runs --input {{data}}/raw.zarr/nan", 2,
        "raw.zarr/nan contains NaN (for example at channel 0, voxel (1, 2, 3)); replace them"),
    row("inf-raw-predict", f"predict {TINY} --root runs --input {{data}}/raw.zarr/inf", 2,
        "raw.zarr/inf contains infinite values (for example at channel 0, voxel (2, 5, 7))"),
    row("nan-raw-infer", f"infer {TINY} --root runs --input {{data}}/raw.zarr/nan --gt {{data}}/labels.zarr/gt", 2,
        "raw.zarr/nan contains NaN"),
    row("nan-train-sample", f"train {TINY} --root runs {samples('nan')}", 2,
        "nan.zarr/volumes/raw contains NaN (for example at channel 0, voxel (3, 20, 1)); replace them (e.g. with 0) "
        "before training"),
    row("nan-prediction-patches", f"{LABEL} --input {{data}}/nan_patches.zarr", 2,
        "nan_patches.zarr/patches contains NaN (for example at channel 3, voxel (0, 5, 5)); predict it again"),
    row("nan-prediction-patches-in-process", f"{INPROCESS} --input {{data}}/nan_patches.zarr", 2,
        "nan_patches.zarr/patches contains NaN"),
    row("nan-prediction-numinst", f"{LABEL} --input {{data}}/nan_numinst.zarr", 2,
        "nan_numinst.zarr/numinst contains NaN (for example at channel 1, voxel (0, 7, 8))"),
    row("nan-prediction-visualize", f"visualize {TINY} --root runs --input {{data}}/nan_patches.zarr", 2,
        "nan_patches.zarr/patches contains NaN"),
    row("nan-prediction-too-large-to-scan", f"{LABEL} --set cluster.retries=0 --input {{data}}/nan_patches.zarr", 1,
        "ppp-dist: label finished with failed blocks (see the summary above); run the same command again to retry "
        "them", setup=too_large_to_scan, inproc=True, check=failed_block_recorded),
    row("nan-raw-plan-is-a-dry-run", "plan --input {data}/raw.zarr/nan", 0, "nothing was written (dry run)",
        stream="stdout", check=nothing_written),

    # -- output locations that cannot be written; existing outputs stay untouched
    row("readonly-root-is-a-file", f"{LABEL.replace('--root runs', '--root afile')} --input {{data}}/pred.zarr", 2,
        "experiment folder afile cannot be written (afile is a file, not a folder)", setup=a_file),
    row("readonly-root-below-a-file", f"{LABEL.replace('--root runs', '--root afile/runs')} --input {{data}}/pred.zarr",
        2, "experiment folder afile/runs cannot be written (afile is a file, not a folder)", setup=a_file),
    row("readonly-root-read-only-folder", ON_PRED.replace("--root runs", "--root ro/runs"), 2,
        "experiment folder ro/runs cannot be written (ro is read-only)", setup=read_only_root),
    row("readonly-demo-root", "demo --root afile", 2, "experiment folder afile cannot be written", setup=a_file),
    row("readonly-instances-in-the-way",
        f"{INPROCESS.replace('--root runs', '--exp exp')} --input {{data}}/pred.zarr", 2,
        "cannot write the instances exp/instances.zarr: a file of that name is in the way", setup=exp_instances_file),
    row("readonly-evaluation-in-the-way", f"{EVALUATE.replace('--root runs', '--exp exp')} --input "
        "{data}/labels.zarr/pred --gt {data}/labels.zarr/gt", 2,
        "cannot write the evaluation report into exp/evaluation: a file of that name is in the way",
        setup=exp_evaluation_file),
    row("readonly-database-below-a-file", f"{ON_PRED} --set database.path='afile/graph.sqlite'",
        2, "cannot create the SQLite database afile/graph.sqlite: afile is a file", setup=a_file),
    row("readonly-database-path-is-a-folder", f"{ON_PRED} --set database.path='{{data}}'", 2,
        "is a folder; give a file name such as"),
    row("existing-outputs-kept-on-bad-input", "label --exp exp --input {data}/p9.zarr", 2,
        "p9.zarr/patches has shape (9, 1, 24, 24)", setup=exp_with_outputs),
    row("existing-prediction-of-another-volume", "predict --exp exp --input {data}/raw.zarr/raw", 2,
        "exp/prediction.zarr/numinst holds the prediction of a volume of shape (1, 24, 24), not of",
        setup=exp_with_outputs),

    # -- a database of another run, or another program, or unreachable
    row("database-of-another-experiment", "label --exp exp --input {data}/pred.zarr", 2,
        "database exp/graph.sqlite belongs to another experiment (", setup=other_experiments_database),
    row("database-path-of-another-experiment", f"{ON_PRED} --set database.path='b/graph.sqlite'",
        2, "database b/graph.sqlite belongs to another experiment (", setup=other_experiments_database),
    row("database-foreign-schema", f"{ON_PRED} --set database.path='{{data}}/foreign.sqlite'",
        2, "has a table 'blocks' with the columns (a, b) where ppp_dist expects"),
    row("database-of-another-program", f"{ON_PRED} --set database.path='{{data}}/program.sqlite'",
        2, "holds tables of another program (users), not a ppp_dist graph database"),
    row("database-not-sqlite", f"{ON_PRED} --set database.path='{{data}}/text.sqlite'", 2,
        "text.sqlite is not an SQLite database (file is not a database)"),
    row("database-newer-schema", f"{ON_PRED} --set database.path='{{data}}/future.sqlite'", 2,
        "future.sqlite has schema version 99, this ppp_dist expects 4"),
    row("database-postgres-unreachable", f"{ON_PRED} --set database.backend=postgres "
        "--set database.dsn='postgresql://me:secret@127.0.0.1:1/graph'", 2,
        "cannot reach PostgreSQL at postgresql://me@127.0.0.1:1/graph ("),
    row("database-postgres-foreign-schema", f"{ON_PRED} --set database.backend=postgres "
        "--set database.dsn='{dsn}'", 2, "has a table 'blocks' with the columns (a, b)",
        setup=postgres_foreign_schema, marks=pytest.mark.postgres),
    row("database-postgres-of-another-experiment", f"{ON_PRED} --set database.backend=postgres "
        "--set database.dsn='{dsn}'", 2, "belongs to another experiment (/elsewhere/ppp_250101_120000)",
        setup=postgres_other_experiment, marks=pytest.mark.postgres),

    # -- the dask scheduler
    row("scheduler-unreachable", f"{ON_PRED} --scheduler tcp://127.0.0.1:1", 2,
        "cannot reach the dask scheduler at tcp://127.0.0.1:1 (Connection refused, for 1 s)",
        setup=short_connect_timeout, inproc=True),
    row("scheduler-unreachable-from-config", f"{ON_PRED} --set cluster.kind=scheduler "
        "--set cluster.scheduler_address=tcp://127.0.0.1:1", 2, "cannot reach the dask scheduler at tcp://127.0.0.1:1",
        setup=short_connect_timeout, inproc=True),
    row("scheduler-unreachable-infer", f"infer {TINY} --root runs --input {{data}}/raw.zarr/raw "
        "--scheduler tcp://127.0.0.1:1 --gt {data}/labels.zarr/gt", 2,
        "cannot reach the dask scheduler at tcp://127.0.0.1:1", setup=short_connect_timeout, inproc=True),
    row("scheduler-not-an-address", f"{ON_PRED} --scheduler host:port", 2,
        "'host:port' is not a scheduler address; give --scheduler tcp://HOST:PORT"),

    # -- checkpoints
    row("checkpoint-not-a-checkpoint", f"predict {TINY} --root runs --input {{data}}/raw.zarr/raw "
        "--set prediction.checkpoint='{data}/garbage.pt'", 2,
        "cannot read checkpoint {data}/garbage.pt: torch cannot load it (not a checkpoint, or a damaged one)",
        inproc=True),
    row("checkpoint-not-of-ppp-dist", f"predict {TINY} --root runs --input {{data}}/raw.zarr/raw "
        "--set prediction.checkpoint='{data}/not_ppp.pt'", 2,
        "not_ppp.pt is not a ppp_dist checkpoint (no model_state_dict/architecture); give a checkpoint_<iteration>.pt",
        inproc=True),
    row("checkpoint-of-another-network", f"predict {TINY} --root runs --input {{data}}/raw.zarr/raw "
        "--set model.num_fmaps=3", 2, "ck.pt belongs to another network: num_fmaps is 2 in the checkpoint but 3 in "
        "the config", inproc=True),
    row("checkpoint-file-missing", f"predict {TINY} --root runs --input {{data}}/raw.zarr/raw "
        "--set prediction.checkpoint='{data}/none.pt'", 2, "checkpoint {data}/none.pt does not exist"),
    row("checkpoint-none-in-new-experiment", f"predict {TINY} --root runs --input {{data}}/raw.zarr/raw "
        "--set prediction.checkpoint=last", 2,
        "predict needs a trained network but a new experiment (--root) has no checkpoints"),
    row("checkpoint-none-in-experiment",
        "predict --exp exp --input {data}/raw.zarr/raw --set prediction.checkpoint=last", 2,
        "predict needs a trained network but exp/train holds no checkpoint_<iteration>.pt", setup=exp_empty),
    row("checkpoint-garbage-in-experiment", "predict --exp exp --input {data}/raw.zarr/raw "
        "--set prediction.checkpoint=last", 2, "cannot read checkpoint exp/train/checkpoint_5.pt: torch cannot load it",
        setup=exp_garbage_checkpoint, inproc=True),
    row("checkpoint-iteration-missing", "predict --exp exp --input {data}/raw.zarr/raw --set prediction.checkpoint=7",
        2, "no checkpoint for iteration 7 in exp/train (found 5)", setup=exp_checkpoint_5),
    row("checkpoint-init-not-a-checkpoint", f"train {TINY} --root runs {samples('good')} "
        "--set training.init_checkpoint='{data}/garbage.pt'", 2, "cannot read checkpoint {data}/garbage.pt",
        inproc=True),
    row("checkpoint-init-missing", f"train {TINY} --root runs {samples('good')} "
        "--set training.init_checkpoint='{data}/none.pt'", 2,
        "[training] init_checkpoint {data}/none.pt does not exist"),
    *[row(f"checkpoint-{name.replace('_', '-')}", f"predict {TINY} --root runs --input {{data}}/raw.zarr/raw "
          f"--set prediction.checkpoint='{{data}}/{name}.pt'", 2, message, inproc=True)
      for name, message in (("missing_keys", "missing_keys.pt lacks the weights "),
                            ("wrong_shapes", "wrong_shapes.pt has weights of the wrong shape: "),
                            ("nan_weights", "nan_weights.pt holds NaN or infinite weights (in "),
                            ("bad_architecture", "bad_architecture.pt has a damaged 'architecture' entry ("))],
    row("checkpoint-missing-keys-in-experiment", "predict --exp exp --input {data}/raw.zarr/raw "
        "--set prediction.checkpoint='{data}/missing_keys.pt'", 2, "lacks the weights", setup=exp_empty, inproc=True),

    # -- values the config checks when it loads (issue #15): one sentence before anything runs
    row("config-nan-clip-max", f"predict {TINY} --root runs --input {{data}}/raw.zarr/raw --set data.clip_max=nan",
        2, "[data] clip_max must be a finite number, got nan"),
    row("config-nan-learning-rate", f"train {TINY} --root runs {samples('good')} --set training.learning_rate=nan",
        2, "[training] learning_rate must be a finite number, got nan"),
    row("config-huge-seed", f"train {TINY} --root runs {samples('good')} --set general.seed=12345678901234567890", 2,
        "[general] seed must be an integer below 2^63 in size, got 12345678901234567890"),
    row("config-seed-over-32-bits", f"train {TINY} --root runs {samples('good')} --set general.seed=4294967296", 2,
        "[general] seed must lie in [0, 4294967295], got 4294967296"),
    row("config-unknown-device", f"predict {TINY} --root runs --input {{data}}/raw.zarr/raw "
        "--set prediction.device=gpu9", 2, "[prediction] device must be auto, cpu, cuda or cuda:N, got 'gpu9'"),
    row("config-absent-device", f"predict {TINY} --root runs --input {{data}}/raw.zarr/raw "
        "--set prediction.device=cuda:7", 2, "[prediction] device = 'cuda:7' but this machine has ",
        marks=pytest.mark.skipif(_has_cuda_7(), reason="this machine has cuda:7")),
    row("config-absent-training-device", f"train {TINY} --root runs {samples('good')} --set training.device=cuda:7",
        2, "[training] device = 'cuda:7' but this machine has ",
        marks=pytest.mark.skipif(_has_cuda_7(), reason="this machine has cuda:7")),
    row("config-memory-limit", f"{ON_PRED} --set cluster.memory_limit=lots", 2,
        "[cluster] memory_limit must be \"auto\" or a size such as 8GiB, got 'lots'"),
    row("config-dashboard-address", f"{ON_PRED} --set cluster.dashboard_address=not-an-address", 2,
        "[cluster] dashboard_address must be [HOST]:PORT, e.g. :8787 or :0 (any free port), got 'not-an-address'"),
    row("config-validation-grid", f"validate {TINY} --root runs {samples('good', 'val_data')} "
        "--set 'validation.grid={{patch_threshold=[0.5, 2.0]}}'", 2,
        "[validation.grid] patch_threshold = 2.0: [vote] patch_threshold must lie strictly between 0 and 1"),
    row("config-validation-metric", f"validate {TINY} --root runs {samples('good', 'val_data')} "
        "--set validation.metric=avs", 2, "[validation] metric = 'avs' is not a number evaluate reports"),
    row("config-validation-metric-of-criterion", f"validate {TINY} --root runs {samples('good', 'val_data')} "
        "--set evaluation.criterion=cldice", 2,
        "[validation] metric = 'avS' is not a number evaluate reports with [evaluation] criterion = 'cldice'"),

    # -- files that are damaged or not what they say (issue #15)
    row("file-config-not-utf8", f"{LABEL} -c {{data}}/latin1.toml --input {{data}}/pred.zarr", 2,
        "config file {data}/latin1.toml is not UTF-8 text (byte 0xfc at offset 24); save it as UTF-8"),
    row("file-experiment-id-not-utf8", "label --exp exp --input {data}/pred.zarr", 2,
        "exp/experiment_id is not UTF-8 text (byte 0xff at offset 0)", setup=exp_id_not_utf8),
    row("file-truncated-zarr-json-prediction", f"{LABEL} --input {{data}}/truncated.zarr", 2,
        "zarr metadata {data}/truncated.zarr/patches/zarr.json is damaged (JSONDecodeError: "),
    row("file-truncated-zarr-json-raw", f"predict {TINY} --root runs --input {{data}}/truncated_raw.zarr/raw", 2,
        "cannot read the zarr metadata of 'raw' in {data}/truncated_raw.zarr"),
    row("file-truncated-zarr-json-existing-output", "label --exp exp --input {data}/pred.zarr", 2,
        "zarr metadata exp/instances.zarr/instances/zarr.json is damaged", setup=exp_truncated_instances),

    # -- label ids postprocess must take as evaluate does (issue #15)
    row("ids-negative-postprocess", "postprocess --root runs --input {data}/ids.zarr/negative", 2,
        "ids.zarr/negative holds the negative id -3 at channel 0, voxel (0, 3, 3); instance ids must be >= 0"),
    row("ids-negative-evaluate", f"{EVALUATE} --input {{data}}/ids.zarr/negative --gt {{data}}/labels.zarr/gt", 2,
        "ids.zarr/negative holds the negative id -3"),
    row("ids-above-2-63-postprocess", "postprocess --root runs --input {data}/ids.zarr/above_2_63", 0,
        "-> 2 instances", stream="stdout", check=relabelled_two),
    row("ids-near-4e9-postprocess", "postprocess --root runs --input {data}/ids.zarr/near_4e9", 0,
        "postprocess: 4000000000 -> 2 instances", stream="stdout", check=relabelled_two),

    # -- values the network or the vote cannot take (issue #15)
    row("value-raw-overflows-network", f"predict {TINY} --root runs --input {{data}}/hostile_raw.zarr/overflow", 2,
        "hostile_raw.zarr/overflow holds 1e+38 at channel 0, voxel (0, 0, 0), outside [-1e+20, 1e+20]; with [data] "
        "normalization = 'none' values this large overflow the network"),
    row("value-float-patches-above-one", f"{LABEL} --input {{data}}/wide_patches.zarr", 2,
        "wide_patches.zarr/patches holds 1.7 at channel 4, voxel (0, 6, 6), outside [0, 1]; float predictions are "
        "probabilities"),
    row("value-float-patches-above-one-in-process", f"{INPROCESS} --input {{data}}/wide_patches.zarr", 2,
        "outside [0, 1]"),
    row("value-complex-raw", f"predict {TINY} --root runs --input {{data}}/hostile_raw.zarr/complex", 2,
        "hostile_raw.zarr/complex holds complex numbers (complex64); give real numbers"),
    row("value-complex-raw-plan", "plan --input {data}/hostile_raw.zarr/complex", 2,
        "holds complex numbers (complex64)"),

    # -- crafted shapes: refused at once, plan is O(1) in the blocks (issue #15)
    row("shape-crafted-huge-plan", "plan --input {data}/huge_raw.zarr/raw", 2,
        "would be cut into 24,414,062,500 blocks of (64, 64, 64), more than 10,000,000; raise [vote] block_shape"),
    row("shape-crafted-huge-label", f"{LABEL} --input {{data}}/huge_pred.zarr", 2,
        "the prediction {data}/huge_pred.zarr of shape (1, 10000000, 10000000) would be cut into "),
    row("shape-crafted-label-in-process-memory", f"{INPROCESS} --set vote.block_shape=[1,4096,4096] "
        "--input {data}/wide_pred.zarr", 2, "label with [vote] blockwise = false on {data}/wide_pred.zarr needs "
        "about "),
    row("shape-plan-8192-cubed-metadata-only", "plan --input {data}/big_raw.zarr/raw", 0,
        "vote     2097152     (64, 64, 64)", stream="stdout", check=nothing_written),

    # -- full disk, read-only experiment, flags that do not exist (issue #15)
    row("disk-full-label", f"{INPROCESS.replace('--root runs', '--root full/runs')} --input {{data}}/pred.zarr", 2,
        "no space left on the device for output full/runs/", setup=full_disk, leaves=True,
        check=resumes_after_space_is_freed),
    row("read-only-status", "status ro/exp", 0, "blockwise stages (ledger):", stream="stdout",
        setup=read_only_experiment, check=read_only_status),
    row("flag-overwrite-is-a-setting", "predict --exp exp --input {data}/raw.zarr/raw "
        "--set prediction.patch_dtype=float16", 2, "exp/prediction.zarr/patches holds uint8 patches, not [prediction] "
        "patch_dtype = float16; pass --set general.overwrite=true", setup=exp_float16_prediction_wanted),
    row("usage-demo-workers-zero", "demo --workers 0 --root runs", 2, "--workers must be at least 1, got 0"),
    row("usage-demo-workers-negative", "demo --workers -1 --root runs", 2, "--workers must be at least 1, got -1"),
]
