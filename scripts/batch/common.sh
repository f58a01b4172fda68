# scripts/batch/common.sh: the code behind scripts/batch/local/<dataset>.sh and scripts/batch/slurm/<dataset>.sh.
# Sourced by them (not run): they call `ppp_batch_main local|slurm DATASET "$@"`. Settings come from
# scripts/batch/site.env (or the file $PPP_SITE_ENV names); docs/cluster.md explains the whole set-up.
#
# One experiment folder per dataset, $PPP_RUNS_ROOT/<dataset> (or --exp), holds the training and the
# validation; every test volume gets its own experiment folder <exp>/test/<sample> with its own graph
# database, predicting with the best validated checkpoint and [vote] parameters (the last checkpoint
# when validation was skipped). Running the same command again resumes: training continues from its
# newest checkpoint, validation and test volumes whose results are newer than the checkpoint are skipped
# (--force redoes them), and the label stage skips the blocks its ledger has as done.
# Bash 4.2 compatible (older clusters): empty arrays are expanded as ${a[@]+"${a[@]}"}.

PPP_BATCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PPP_REPO=$(cd "$PPP_BATCH_DIR/../.." && pwd)
PPP_DATASETS=(flylight bbbc010_ppp bbbc010_pppdec dsb2018_ppp dsb2018_pppdec nuclei3d isbi2012)
PPP_ALL_STEPS=(train validate infer)
PPP_SHOWN_SECTIONS="data prediction vote cluster database"
PPP_PROG=${PPP_PROG:-scripts/batch}

ppp_die() {
    echo "$PPP_PROG: error: $*" >&2
    exit 2
}

ppp_usage() {
    cat <<EOF
usage: $PPP_PROG [options]

$( [ "$PPP_MODE" = slurm ] && echo "Submit one SLURM job (the driver) that runs" || echo "Run" ) train -> validate -> infer (predict, label, evaluate)
for configs/$PPP_DATASET.toml with ppp-dist; label runs on the dask cluster of PPP_CLUSTER_KIND.
Settings: $PPP_SITE (the one file to edit; docs/cluster.md).

options:
  --dry-run, -n        check inputs and print the commands, the resolved config (ppp-dist show-config)
                       and ppp-dist plan of every test volume$( [ "$PPP_MODE" = slurm ] && echo ", and the job script;
                       submits nothing" || echo "; runs and writes nothing" ) (also: PPP_DRY_RUN=1)
  --steps LIST         comma-separated subset of train,validate,infer (default: all)
  --exp DIR            experiment folder (default: \$PPP_RUNS_ROOT/$PPP_DATASET)
  --data DIR           dataset folder with train/ val/ test/ of zarr samples
                       (default: \$PPP_DATA_ROOT/$PPP_DATASET)
  --input PATH.zarr/KEY  infer this volume instead of the samples in test/
  --gt PATH.zarr/KEY   its ground truth (without it: predict and label, no evaluate)
  --set SECTION.KEY=VALUE  passed to every ppp-dist command (repeatable)
  --force              redo validate and test volumes even if their results are newer than the checkpoint
EOF
    if [ "$PPP_MODE" = slurm ]; then
        cat <<EOF
  --after JOBID        start only after job JOBID finished successfully (--dependency=afterok)
EOF
    fi
    echo "  -h, --help           this text"
}

# --- small helpers -------------------------------------------------------------------------------------

ppp_abs() {  # ppp_abs BASE PATH: PATH made absolute against BASE
    case $2 in
        /*) printf '%s\n' "$2" ;;
        *) printf '%s\n' "$1/$2" ;;
    esac
}

ppp_toml_str() {  # a TOML basic string
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

ppp_toml_list() {  # ppp_toml_list ITEM...: a TOML list of strings
    local out="" item
    for item in "$@"; do
        out+="${out:+, }$(ppp_toml_str "$item")"
    done
    printf '[%s]' "$out"
}

ppp_split() {  # ppp_split "a;b ; c": one item per line, blanks trimmed, empty items dropped
    local IFS=';' item
    for item in $1; do
        item=$(printf '%s' "$item" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//')
        [ -n "$item" ] && printf '%s\n' "$item"
    done
    return 0
}

ppp_quote() {  # the arguments as one line that bash reads back as the same words
    local out="" arg q="'"
    for arg in "$@"; do
        if [[ -n $arg && $arg =~ ^[A-Za-z0-9_./:=,@+%-]+$ ]]; then
            out+="${out:+ }$arg"
        else
            out+="${out:+ }'${arg//$q/$q\\$q$q}'"
        fi
    done
    printf '%s\n' "$out"
}

ppp_redact() {  # stdin -> stdout with the passwords of DSNs replaced by ***
    sed -E -e 's#(://[^:/@ "]*):[^@ "]*@#\1:***@#g' -e 's#(password=)[^ "]*#\1***#g'
}

ppp_show() {  # print a command as it would be typed, ppp-dist for the full path, DSN passwords hidden
    local line
    line=$(ppp_quote "$@")
    line=${line//"$PPP_BIN"/ppp-dist}
    printf '+ %s\n' "$line" | ppp_redact
}

# What may be written into a job script. Values on #SBATCH lines cannot be quoted for the shell (sbatch reads
# them, then bash sees a comment), so they are held to strict patterns; values on command lines are quoted
# (ppp_quote); and no value may hold a control character (a newline would start a new command).
PPP_RE_NAME='^[A-Za-z0-9_][A-Za-z0-9_.+@-]*(,[A-Za-z0-9_][A-Za-z0-9_.+@-]*)*$'  # partition, account
PPP_RE_TIME='^([0-9]+-)?[0-9]{1,4}(:[0-9]{2}){0,2}$'  # SLURM: MM, HH:MM:SS, D-HH:MM:SS, ...
PPP_RE_MEM='^[0-9]+[KMGT]?B?$'
PPP_RE_INT='^[0-9]+$'
PPP_RE_JOB='^[0-9]+(_[0-9]+)?(:[0-9]+(_[0-9]+)?)*$'  # --after JOBID[:JOBID...]
PPP_RE_PATH='^[A-Za-z0-9_./@+=,:~-]+$'  # a path on an #SBATCH line (no blanks, quotes, $ or %)
PPP_RE_OPT='^--?[A-Za-z][A-Za-z0-9_-]*([= ]([]A-Za-z0-9_.,:=/+@%*()[-]+|"[]A-Za-z0-9_.,:=/+@%*() [-]*"))?$'

ppp_check_value() {  # ppp_check_value WHAT VALUE [REGEX EXPECTED]: refuse control characters / a mismatch
    if [[ $2 == *[[:cntrl:]]* ]]; then
        ppp_die "$1 holds a control character (newline, tab, ...): $(printf '%q' "$2"); job scripts take one line per value"
    fi
    if [ $# -ge 4 ] && [ -n "$2" ] && ! [[ $2 =~ $3 ]]; then
        ppp_die "$1 must be $4, got $(printf '%q' "$2")"
    fi
    return 0
}

ppp_check_inputs() {  # every option and setting that a command line or a job script gets, before anything runs
    local s name
    for name in OPT_STEPS OPT_EXP OPT_DATA OPT_INPUT OPT_GT; do ppp_check_value "${name#OPT_}" "${!name}"; done
    for s in ${OPT_SETS[@]+"${OPT_SETS[@]}"}; do ppp_check_value "--set" "$s"; done
    ppp_check_value "--after" "$OPT_AFTER" "$PPP_RE_JOB" "a job id (or JOBID:JOBID...)"
    for name in "${PPP_EXPORTED[@]}" PPP_PARTITION PPP_WALLTIME PPP_CPUS PPP_MEMORY PPP_GPUS PPP_SBATCH_EXTRA; do
        ppp_check_value "$name (in $PPP_SITE)" "${!name-}"
    done
    [ "$PPP_MODE" = slurm ] || return 0
    ppp_check_value "--exp" "$OPT_EXP" "$PPP_RE_PATH" "a path of letters, digits and _./@+=,:~- (it goes on an #SBATCH line)"
    ppp_check_value "PPP_RUNS_ROOT (in $PPP_SITE)" "$PPP_RUNS_ROOT" "$PPP_RE_PATH" "a path of letters, digits and _./@+=,:~-"
    ppp_check_value "PPP_PARTITION (in $PPP_SITE)" "$PPP_PARTITION" "$PPP_RE_NAME" "a partition name"
    ppp_check_value "PPP_ACCOUNT (in $PPP_SITE)" "$PPP_ACCOUNT" "$PPP_RE_NAME" "an account name"
    ppp_check_value "PPP_WALLTIME (in $PPP_SITE)" "$PPP_WALLTIME" "$PPP_RE_TIME" "a SLURM time such as 24:00:00 or 2-00:00:00"
    ppp_check_value "PPP_CPUS (in $PPP_SITE)" "$PPP_CPUS" "$PPP_RE_INT" "a number"
    ppp_check_value "PPP_GPUS (in $PPP_SITE)" "$PPP_GPUS" "$PPP_RE_INT" "a number"
    ppp_check_value "PPP_MEMORY (in $PPP_SITE)" "$PPP_MEMORY" "$PPP_RE_MEM" "a SLURM memory size such as 64G"
    while IFS= read -r s; do
        ppp_check_value "PPP_SBATCH_EXTRA entry (in $PPP_SITE)" "$s" "$PPP_RE_OPT" "one option such as --qos=long"
    done < <(ppp_split "$PPP_SBATCH_EXTRA")
}

ppp_has_samples() {  # a folder holding at least one *.zarr sample
    compgen -G "$1/*.zarr" >/dev/null 2>&1
}

ppp_newest_checkpoint() {
    local newest="" f
    for f in "$1"/train/checkpoint_*.pt; do
        [ -e "$f" ] || continue
        if [ -z "$newest" ] || [ "$f" -nt "$newest" ]; then newest=$f; fi
    done
    printf '%s' "$newest"
}

ppp_db_name() {  # <dataset>_<sample> as a PostgreSQL database name: lower case, [a-z0-9_], at most 63
    printf '%s' "$1" | tr '[:upper:]' '[:lower:]' | sed -e 's/[^a-z0-9_]/_/g' | cut -c1-63
}

# --- settings and arguments ----------------------------------------------------------------------------

ppp_load_site() {
    PPP_SITE=$(ppp_abs "$PPP_CALLER_PWD" "${PPP_SITE_ENV:-$PPP_BATCH_DIR/site.env}")
    [ -f "$PPP_SITE" ] || ppp_die "settings file $PPP_SITE does not exist (PPP_SITE_ENV)"
    # shellcheck source=scripts/batch/site.env
    source "$PPP_SITE"
    PPP_BIN=$(ppp_abs "$PPP_REPO" "$PPP_VENV")/bin/ppp-dist
    PPP_PY=$(ppp_abs "$PPP_REPO" "$PPP_VENV")/bin/python
    # the scripts hand each experiment its own DSN; an exported PPP_DIST_DB_DSN would override all of them
    unset PPP_DIST_DB_DSN
}

ppp_parse_args() {
    OPT_DRY=${PPP_DRY_RUN:-0}
    OPT_STEPS=""
    OPT_EXP=""
    OPT_DATA=""
    OPT_INPUT=""
    OPT_GT=""
    OPT_FORCE=0
    OPT_AFTER=""
    OPT_SETS=()
    while [ $# -gt 0 ]; do
        case $1 in
            -n | --dry-run) OPT_DRY=1 ;;
            --steps | --exp | --data | --input | --gt | --set | --after)
                [ $# -ge 2 ] || ppp_die "$1 needs a value (see --help)"
                case $1 in
                    --steps) OPT_STEPS=$2 ;;
                    --exp) OPT_EXP=$(ppp_abs "$PPP_CALLER_PWD" "$2") ;;
                    --data) OPT_DATA=$(ppp_abs "$PPP_CALLER_PWD" "$2") ;;
                    --input) OPT_INPUT=$(ppp_abs "$PPP_CALLER_PWD" "$2") ;;
                    --gt) OPT_GT=$(ppp_abs "$PPP_CALLER_PWD" "$2") ;;
                    --set) OPT_SETS+=("$2") ;;
                    --after)
                        [ "$PPP_MODE" = slurm ] || ppp_die "--after is an option of the SLURM scripts"
                        OPT_AFTER=$2 ;;
                esac
                shift ;;
            --force) OPT_FORCE=1 ;;
            -h | --help) ppp_usage; exit 0 ;;
            *) ppp_die "unknown option $1 (see --help)" ;;
        esac
        shift
    done
    [ "$OPT_DRY" = 0 ] || OPT_DRY=1
    STEPS=()
    local step known s
    for step in $(printf '%s' "${OPT_STEPS:-train,validate,infer}" | tr ',' ' '); do
        known=0
        for s in "${PPP_ALL_STEPS[@]}"; do [ "$s" = "$step" ] && known=1; done
        [ "$known" = 1 ] || ppp_die "unknown step '$step' in --steps; choose from train, validate, infer"
        STEPS+=("$step")
    done
    [ ${#STEPS[@]} -gt 0 ] || ppp_die "--steps names no step; choose from train, validate, infer"
    if [ -n "$OPT_GT" ] && [ -z "$OPT_INPUT" ]; then ppp_die "--gt needs --input"; fi
}

ppp_wants() {  # ppp_wants STEP: is STEP among --steps
    local s
    for s in "${STEPS[@]}"; do [ "$s" = "$1" ] && return 0; done
    return 1
}

# --- what the ppp-dist commands get --------------------------------------------------------------------

ppp_setup_run() {
    DS_CONFIG=$PPP_REPO/configs/$PPP_DATASET.toml
    [ -f "$DS_CONFIG" ] || ppp_die "no config $DS_CONFIG"
    DATA_DIR=${OPT_DATA:-$(ppp_abs "$PPP_REPO" "$PPP_DATA_ROOT/$PPP_DATASET")}
    EXP=${OPT_EXP:-$(ppp_abs "$PPP_REPO" "$PPP_RUNS_ROOT/$PPP_DATASET")}
    # the config of the training experiment: the dataset's file, its data folders, the user's --set
    BASE_ARGS=(--config "$DS_CONFIG")
    if [ -d "$DATA_DIR/train" ]; then
        BASE_ARGS+=(--set "data.train_data=$(ppp_toml_list "$DATA_DIR/train")")
    fi
    if [ -d "$DATA_DIR/val" ]; then
        BASE_ARGS+=(--set "data.val_data=$(ppp_toml_list "$DATA_DIR/val")")
    fi
    USER_SETS=()
    local s
    for s in ${OPT_SETS[@]+"${OPT_SETS[@]}"}; do USER_SETS+=(--set "$s"); done
    BASE_ARGS+=(${USER_SETS[@]+"${USER_SETS[@]}"})
    # the [cluster] of the label stage
    local workers=$PPP_WORKERS
    if [ "$PPP_CLUSTER_KIND" = local ] && [ "$workers" = 0 ] && [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then
        # os.cpu_count() sees the whole node inside a SLURM job; use the CPUs of the allocation
        workers=$(( SLURM_CPUS_PER_TASK / (PPP_THREADS_PER_WORKER > 0 ? PPP_THREADS_PER_WORKER : 1) ))
        [ "$workers" -ge 1 ] || workers=1
    fi
    CLUSTER_SETS=(
        --set "cluster.kind=$(ppp_toml_str "$PPP_CLUSTER_KIND")"
        --set "cluster.n_workers=$workers"
        --set "cluster.threads_per_worker=$PPP_THREADS_PER_WORKER"
        --set "cluster.memory_limit=$(ppp_toml_str "$PPP_WORKER_MEMORY")"
        --set "cluster.dashboard_address=$(ppp_toml_str "$PPP_DASHBOARD")"
        --set "cluster.retries=$PPP_RETRIES"
    )
    case $PPP_CLUSTER_KIND in
        scheduler)
            CLUSTER_SETS+=(--set "cluster.scheduler_address=$(ppp_toml_str "$PPP_SCHEDULER")") ;;
        slurm | lsf | pbs)
            local extra=()
            while IFS= read -r s; do extra+=("$s"); done < <(ppp_split "$PPP_WORKER_SBATCH_EXTRA")
            CLUSTER_SETS+=(
                --set "cluster.queue=$(ppp_toml_str "$PPP_WORKER_PARTITION")"
                --set "cluster.account=$(ppp_toml_str "$PPP_ACCOUNT")"
                --set "cluster.walltime=$(ppp_toml_str "$PPP_WORKER_WALLTIME")"
                --set "cluster.cores=$PPP_WORKER_CORES"
                --set "cluster.memory=$(ppp_toml_str "$PPP_WORKER_JOB_MEMORY")"
                --set "cluster.gpus_per_job=$PPP_WORKER_GPUS"
                --set "cluster.job_extra_directives=$(ppp_toml_list ${extra[@]+"${extra[@]}"})"
                --set "cluster.interface=$(ppp_toml_str "$PPP_WORKER_INTERFACE")"
            ) ;;
    esac
}

ppp_read_keys() {  # RAW_KEY, GT_KEY, HEAD of the resolved dataset config
    local line out
    # with dask-jobqueue, with the [cluster] of the label stage: its values reach the worker job scripts and are
    # checked now, before anything is submitted
    local jobqueue=()
    case $PPP_CLUSTER_KIND in slurm | lsf | pbs) jobqueue=("${CLUSTER_SETS[@]}") ;; esac
    out=$("$PPP_PY" "$PPP_BATCH_DIR/batch_helper.py" keys "$DS_CONFIG" ${USER_SETS[@]+"${USER_SETS[@]}"} \
        ${jobqueue[@]+"${jobqueue[@]}"}) ||
        ppp_die "configs/$PPP_DATASET.toml with the --set values and the [cluster] settings of $PPP_SITE does not load (see above)"
    while IFS= read -r line; do
        case $line in
            raw_key=*) RAW_KEY=${line#raw_key=} ;;
            gt_key=*) GT_KEY=${line#gt_key=} ;;
            head=*) HEAD=${line#head=} ;;
        esac
    done <<<"$out"
}

ppp_collect_tests() {  # TEST_NAMES, TEST_INPUTS, TEST_GTS (empty string: no ground truth)
    TEST_NAMES=()
    TEST_INPUTS=()
    TEST_GTS=()
    if [ -n "$OPT_INPUT" ]; then
        local store=${OPT_INPUT%%.zarr*}
        TEST_NAMES+=("$(basename "$store")")
        TEST_INPUTS+=("$OPT_INPUT")
        TEST_GTS+=("$OPT_GT")
        return 0
    fi
    local sample
    for sample in "$DATA_DIR"/test/*.zarr; do
        [ -e "$sample" ] || continue
        TEST_NAMES+=("$(basename "$sample" .zarr)")
        TEST_INPUTS+=("$sample/$RAW_KEY")
        if [ -e "$sample/$GT_KEY" ]; then TEST_GTS+=("$sample/$GT_KEY"); else TEST_GTS+=(""); fi
    done
}

ppp_db_sets() {  # ppp_db_sets SAMPLE: DB_SETS and DB_DSN for the experiment of one test volume
    DB_SETS=(--set "database.backend=$(ppp_toml_str "$PPP_DB_BACKEND")")
    DB_DSN=""
    if [ "$PPP_DB_BACKEND" = postgres ]; then
        DB_DSN=${PPP_DB_DSN//%run%/$(ppp_db_name "${PPP_DATASET}_$1")}
        DB_SETS+=(--set "database.dsn=$(ppp_toml_str "$DB_DSN")")
    fi
}

ppp_problems() {  # PROBLEMS: what would make the run fail, checked before anything runs or is submitted
    PROBLEMS=()
    [ -x "$PPP_BIN" ] || PROBLEMS+=("no ppp-dist at $PPP_BIN: run bash scripts/setup_env.sh or set PPP_VENV")
    if ppp_wants train && ! ppp_has_samples "$DATA_DIR/train"; then
        PROBLEMS+=("train needs zarr samples in $DATA_DIR/train (docs/datasets.md converts the data)")
    fi
    if ppp_wants validate && ! ppp_has_samples "$DATA_DIR/val"; then
        PROBLEMS+=("validate needs zarr samples in $DATA_DIR/val; or leave it out: --steps train,infer")
    fi
    if ppp_wants infer; then
        if [ ${#TEST_INPUTS[@]} -eq 0 ]; then
            PROBLEMS+=("infer needs zarr samples in $DATA_DIR/test or --input PATH.zarr/KEY")
        fi
        if [ "$PPP_DB_BACKEND" = postgres ] && [ -z "$PPP_DB_DSN" ]; then
            PROBLEMS+=("PPP_DB_BACKEND=postgres needs PPP_DB_DSN in $PPP_SITE")
        fi
        if [ "$PPP_DB_BACKEND" = postgres ] && [ ${#TEST_INPUTS[@]} -gt 1 ] && [[ $PPP_DB_DSN != *"%run%"* ]]; then
            PROBLEMS+=("${#TEST_INPUTS[@]} test volumes would share the database of PPP_DB_DSN; put %run% in its database name (one database per experiment folder)")
        fi
        case $PPP_CLUSTER_KIND in
            slurm | lsf | pbs)
                [ "$PPP_DB_BACKEND" = postgres ] ||
                    PROBLEMS+=("PPP_CLUSTER_KIND=$PPP_CLUSTER_KIND puts workers on several nodes, which cannot share an SQLite file: set PPP_DB_BACKEND=postgres and PPP_DB_DSN") ;;
        esac
        if [ "$PPP_CLUSTER_KIND" = scheduler ] && [ -z "$PPP_SCHEDULER" ]; then
            PROBLEMS+=("PPP_CLUSTER_KIND=scheduler needs PPP_SCHEDULER=tcp://HOST:8786")
        fi
    fi
    # (not for a SLURM job that waits for another: that one may be the training)
    if ! ppp_wants train && { ppp_wants validate || ppp_wants infer; } && [ -z "$OPT_AFTER" ]; then
        if [ -z "$(ppp_newest_checkpoint "$EXP")" ]; then
            PROBLEMS+=("no checkpoint in $EXP/train: run the train step first (or give --exp)")
        fi
    fi
}

ppp_report_problems() {
    local p
    for p in ${PROBLEMS[@]+"${PROBLEMS[@]}"}; do echo "$PPP_PROG: problem: $p" >&2; done
}

ppp_summary() {
    echo "dataset     $PPP_DATASET (configs/$PPP_DATASET.toml; $HEAD head, raw $RAW_KEY, gt $GT_KEY)"
    echo "settings    $PPP_SITE"
    echo "data        $DATA_DIR"
    echo "experiment  $EXP"
    echo "steps       ${STEPS[*]}"
    case $PPP_CLUSTER_KIND in
        slurm | lsf | pbs) echo "cluster     $PPP_CLUSTER_KIND (dask-jobqueue): $PPP_WORKERS worker job(s) of $PPP_WORKER_CORES cores, $PPP_WORKER_JOB_MEMORY, $PPP_WORKER_GPUS GPU(s), $PPP_WORKER_WALLTIME" ;;
        scheduler) echo "cluster     the running scheduler $PPP_SCHEDULER" ;;
        *) echo "cluster     $PPP_CLUSTER_KIND, $PPP_WORKERS worker process(es) (0 = one per core/GPU) x $PPP_THREADS_PER_WORKER thread(s), memory $PPP_WORKER_MEMORY each" ;;
    esac
    if [ "$PPP_DB_BACKEND" = postgres ]; then
        echo "database    postgres $(printf '%s' "$PPP_DB_DSN" | ppp_redact)"
    else
        echo "database    sqlite, <experiment>/graph.sqlite per test volume"
    fi
    local i
    for i in ${TEST_NAMES[@]+"${!TEST_NAMES[@]}"}; do
        echo "test        ${TEST_NAMES[$i]}: ${TEST_INPUTS[$i]}${TEST_GTS[$i]:+ (gt ${TEST_GTS[$i]})}"
    done
}

# --- the steps ---------------------------------------------------------------------------------------

ppp_tasks_for() {  # ppp_tasks_for GT: the ppp-dist task words for one test volume
    if [ -n "$1" ]; then
        TASK_ARGS=(infer --gt "$1")
    elif [ "$HEAD" = codes ]; then
        TASK_ARGS=(--do predict decode label)
    else
        TASK_ARGS=(--do predict label)
    fi
}

ppp_run() {  # print and run one command; stop the script when it fails, with its exit code
    ppp_show "$@"
    "$@" || {
        local code=$?
        echo "$PPP_PROG: '$(basename "$1") ${2:-}' failed (exit $code); run the same command again to resume" >&2
        exit "$code"
    }
}

ppp_step_train() {
    mkdir -p "$EXP"
    ppp_run "$PPP_BIN" train "${BASE_ARGS[@]}" --exp "$EXP"
}

ppp_step_validate() {
    local newest
    newest=$(ppp_newest_checkpoint "$EXP")
    if [ "$OPT_FORCE" = 0 ] && [ -n "$newest" ] && [ "$EXP/val/best.json" -nt "$newest" ]; then
        echo "validate: $EXP/val/best.json is newer than $(basename "$newest"); skipped (--force redoes it)"
        return 0
    fi
    ppp_run "$PPP_BIN" validate "${BASE_ARGS[@]}" --exp "$EXP"
}

ppp_step_infer() {
    local sets=() out line i name sub done_file checkpoint=""
    out=$("$PPP_PY" "$PPP_BATCH_DIR/batch_helper.py" infer-sets "$EXP") ||
        ppp_die "cannot choose a checkpoint in $EXP (see above)"
    while IFS= read -r line; do
        sets+=(--set "$line")
        case $line in
            prediction.checkpoint=*) checkpoint=${line#prediction.checkpoint=\"}; checkpoint=${checkpoint%\"} ;;
        esac
    done <<<"$out"
    for i in "${!TEST_INPUTS[@]}"; do
        name=${TEST_NAMES[$i]}
        sub=$EXP/test/$name
        ppp_tasks_for "${TEST_GTS[$i]}"
        done_file=$sub/instances.zarr
        [ -z "${TEST_GTS[$i]}" ] || done_file=$sub/evaluation/report.md
        if [ "$OPT_FORCE" = 0 ] && [ -e "$done_file" ] && [ "$done_file" -nt "$checkpoint" ]; then
            echo "infer $name: $done_file is newer than the checkpoint; skipped (--force redoes it)"
            continue
        fi
        ppp_db_sets "$name"
        if [ -n "$DB_DSN" ]; then
            "$PPP_PY" "$PPP_BATCH_DIR/batch_helper.py" ensure-db "$DB_DSN" || exit 2
        fi
        mkdir -p "$sub"
        ppp_run "$PPP_BIN" "${TASK_ARGS[@]}" --config "$EXP/config.toml" --exp "$sub" \
            --input "${TEST_INPUTS[$i]}" "${sets[@]}" "${CLUSTER_SETS[@]}" "${DB_SETS[@]}" \
            ${USER_SETS[@]+"${USER_SETS[@]}"}
        echo "infer $name: outputs in $sub (ppp-dist status $sub; docs/viewing.md shows them)"
    done
}

ppp_dry_run() {
    echo "dry run: nothing is trained, predicted, submitted or written"
    ppp_summary
    echo
    echo "commands:"
    if ppp_wants train; then
        echo "mkdir -p $EXP"
        ppp_show "$PPP_BIN" train "${BASE_ARGS[@]}" --exp "$EXP"
    fi
    if ppp_wants validate; then
        ppp_show "$PPP_BIN" validate "${BASE_ARGS[@]}" --exp "$EXP"
    fi
    local i
    if ppp_wants infer; then
        for i in ${TEST_INPUTS[@]+"${!TEST_INPUTS[@]}"}; do
            ppp_tasks_for "${TEST_GTS[$i]}"
            ppp_db_sets "${TEST_NAMES[$i]}"
            ppp_show "$PPP_BIN" "${TASK_ARGS[@]}" --config "$EXP/config.toml" --exp "$EXP/test/${TEST_NAMES[$i]}" \
                --input "${TEST_INPUTS[$i]}" --set "prediction.checkpoint=<best validated, else last, of $EXP/train>" \
                --set "vote.*=<the validated parameters>" "${CLUSTER_SETS[@]}" "${DB_SETS[@]}" \
                ${USER_SETS[@]+"${USER_SETS[@]}"}
        done
    fi
    echo
    ppp_db_sets "${TEST_NAMES[0]:-sample}"
    echo "resolved config of a test volume, sections $PPP_SHOWN_SECTIONS (all sections: this command):"
    ppp_show "$PPP_BIN" show-config "${BASE_ARGS[@]}" "${CLUSTER_SETS[@]}" "${DB_SETS[@]}"
    local shown
    if ! shown=$("$PPP_BIN" show-config "${BASE_ARGS[@]}" "${CLUSTER_SETS[@]}" "${DB_SETS[@]}"); then
        PROBLEMS+=("ppp-dist show-config refused these settings (see above)")
        shown=""
    fi
    # tomli_w writes one list item per line: fold lists back onto one line, keep the chosen sections
    printf '%s\n' "$shown" | ppp_redact | awk -v keep=" $PPP_SHOWN_SECTIONS " '
        /^\[/ { name = substr($0, 2, length($0) - 2); show = index(keep, " " name " ") > 0 }
        !show { next }
        /^\[/ { print; next }
        /= \[$/ { line = $0; depth = 1; next }
        depth > 0 { item = $0; sub(/^ +/, "", item)
                    if (item ~ /^\[$/) { depth++; line = line "[" ; next }
                    if (item ~ /^\],?$/) { depth--; sub(/, *$/, "", line); line = line item; if (depth == 0) print line; else line = line " "; next }
                    line = line item " "; next }
        { print }'
    echo
    for i in ${TEST_INPUTS[@]+"${!TEST_INPUTS[@]}"}; do
        echo "plan of ${TEST_NAMES[$i]} (ppp-dist plan):"
        "$PPP_BIN" plan "${BASE_ARGS[@]}" --input "${TEST_INPUTS[$i]}" ||
            PROBLEMS+=("ppp-dist plan failed on ${TEST_INPUTS[$i]} (see above)")
        echo
    done
    [ ${#TEST_INPUTS[@]} -gt 0 ] || echo "plan: no test volume found, so no plan (give --input PATH.zarr/KEY)"
}

# --- SLURM: the driver job -------------------------------------------------------------------------------

ppp_job_args() {  # JOB_ARGS: the options the job passes to the local script
    JOB_ARGS=(--steps "$(IFS=,; printf '%s' "${STEPS[*]}")" --exp "$EXP" --data "$DATA_DIR")
    [ -z "$OPT_INPUT" ] || JOB_ARGS+=(--input "$OPT_INPUT")
    [ -z "$OPT_GT" ] || JOB_ARGS+=(--gt "$OPT_GT")
    [ "$OPT_FORCE" = 0 ] || JOB_ARGS+=(--force)
    local s
    for s in ${OPT_SETS[@]+"${OPT_SETS[@]}"}; do JOB_ARGS+=(--set "$s"); done
}

PPP_EXPORTED=(PPP_DATA_ROOT PPP_RUNS_ROOT PPP_VENV PPP_CLUSTER_KIND PPP_WORKERS PPP_THREADS_PER_WORKER
    PPP_WORKER_MEMORY PPP_SCHEDULER PPP_DASHBOARD PPP_RETRIES PPP_ACCOUNT PPP_WORKER_PARTITION
    PPP_WORKER_WALLTIME PPP_WORKER_CORES PPP_WORKER_JOB_MEMORY PPP_WORKER_GPUS PPP_WORKER_SBATCH_EXTRA
    PPP_WORKER_INTERFACE PPP_DB_BACKEND PPP_DB_DSN)

ppp_render_sbatch() {  # the driver job script on stdout
    local log_dir=$EXP/slurm line name
    echo "#!/bin/bash"
    echo "#SBATCH --job-name=ppp-$PPP_DATASET"
    [ -z "$PPP_PARTITION" ] || echo "#SBATCH --partition=$PPP_PARTITION"
    [ -z "$PPP_ACCOUNT" ] || echo "#SBATCH --account=$PPP_ACCOUNT"
    echo "#SBATCH --time=$PPP_WALLTIME"
    echo "#SBATCH --nodes=1"
    echo "#SBATCH --ntasks=1"
    echo "#SBATCH --cpus-per-task=$PPP_CPUS"
    echo "#SBATCH --mem=$PPP_MEMORY"
    [ "$PPP_GPUS" = 0 ] || echo "#SBATCH --gres=gpu:$PPP_GPUS"
    echo "#SBATCH --output=$log_dir/%x-%j.out"
    [ -z "$OPT_AFTER" ] || echo "#SBATCH --dependency=afterok:$OPT_AFTER"
    while IFS= read -r line; do echo "#SBATCH $line"; done < <(ppp_split "$PPP_SBATCH_EXTRA")
    echo "# rendered by $PPP_PROG from $PPP_SITE; edit that file, not this one"
    echo "set -euo pipefail"
    while IFS= read -r line; do echo "$line"; done < <(ppp_split "$PPP_JOB_SETUP")
    for name in "${PPP_EXPORTED[@]}"; do
        echo "export $name=$(ppp_quote "${!name}")"
    done
    echo "export PPP_SITE_ENV=$(ppp_quote "$PPP_SITE")"
    echo "cd $(ppp_quote "$PPP_REPO")"
    ppp_job_args
    echo "exec bash scripts/batch/local/$PPP_DATASET.sh $(ppp_quote "${JOB_ARGS[@]}")"
}

ppp_submit() {
    local script stamp job
    command -v sbatch >/dev/null 2>&1 || ppp_die "sbatch not found: run this on a SLURM login node (--dry-run shows the job)"
    stamp=$(date +%Y%m%d_%H%M%S)
    mkdir -p "$EXP/slurm"
    script=$EXP/slurm/$PPP_DATASET-$stamp.sbatch
    (umask 077 && ppp_render_sbatch >"$script")  # it may hold the database DSN
    job=$(sbatch --parsable "$script") || ppp_die "sbatch refused $script (see above)"
    job=${job%%;*}
    echo "submitted job $job: $script"
    echo "log:    $EXP/slurm/ppp-$PPP_DATASET-$job.out"
    echo "status: squeue -j $job; ppp-dist status $EXP"
}

# --- entry point ---------------------------------------------------------------------------------------

ppp_batch_main() {  # ppp_batch_main local|slurm DATASET [options]
    PPP_MODE=$1
    PPP_DATASET=$2
    shift 2
    PPP_PROG="scripts/batch/$PPP_MODE/$PPP_DATASET.sh"
    PPP_CALLER_PWD=$PWD
    PPP_SITE=${PPP_SITE_ENV:-$PPP_BATCH_DIR/site.env}
    local known=0 name
    for name in "${PPP_DATASETS[@]}"; do [ "$name" = "$PPP_DATASET" ] && known=1; done
    [ "$known" = 1 ] || ppp_die "no batch set-up for dataset '$PPP_DATASET'; known: ${PPP_DATASETS[*]}"
    ppp_parse_args "$@"
    ppp_load_site
    ppp_check_inputs
    cd "$PPP_REPO" || exit 2
    [ -x "$PPP_PY" ] || ppp_die "no Python at $PPP_PY: run bash scripts/setup_env.sh or set PPP_VENV in $PPP_SITE"
    ppp_setup_run
    ppp_read_keys
    ppp_collect_tests
    ppp_problems
    if [ "$OPT_DRY" = 1 ]; then
        if [ "$PPP_MODE" = slurm ]; then
            echo "job script (sbatch would get this; passwords shown as ***):"
            ppp_render_sbatch | ppp_redact
            echo
            echo "the job runs scripts/batch/local/$PPP_DATASET.sh, which would do:"
        fi
        ppp_dry_run
        if [ ${#PROBLEMS[@]} -gt 0 ]; then
            ppp_report_problems
            exit 2
        fi
        echo "dry run ok: no problems found"
        return 0
    fi
    if [ ${#PROBLEMS[@]} -gt 0 ]; then
        ppp_report_problems
        echo "$PPP_PROG: nothing was done" >&2
        exit 2
    fi
    if [ "$PPP_MODE" = slurm ]; then
        ppp_submit
        return 0
    fi
    ppp_summary
    local step
    for step in "${STEPS[@]}"; do
        case $step in
            train) ppp_step_train ;;
            validate) ppp_step_validate ;;
            infer) ppp_step_infer ;;
        esac
    done
    echo "done: $EXP (ppp-dist status $EXP)"
}
