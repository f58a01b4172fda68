"""The ``ppp-dist`` command line: parses, loads the config, delegates.

Exit codes: 0 ok; 1 the run failed (a bug, or blocks that kept failing); 2 a usage, config or input
error, reported in one sentence before anything is written.
"""

from __future__ import annotations

import argparse
import sys

from ppp_dist import __version__
from ppp_dist.tasks import GROUPS, TASKS, task

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

_EPILOG = ("Tasks can also be given the original PatchPerPix way: ppp-dist --do train predict label "
           "--config FILE. Exit codes: 0 ok, 1 failure, 2 usage or input error.")


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one sentence with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_config_options(p: argparse.ArgumentParser, *, experiment: bool = True, volume: bool = True) -> None:
    p.add_argument("-c", "--config", action="append", default=[], metavar="FILE",
                   help="TOML config; repeat to layer files (later ones win)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                   help="override one config value, TOML syntax (e.g. --set vote.patch_threshold=0.6)")
    if volume:
        p.add_argument("-i", "--input", metavar="PATH.zarr/KEY",
                       help="volume to read, overriding [data] input; a .tif/.tiff/.png image (2D or 3D) is "
                            "converted into the experiment folder first")
    if experiment:
        group = p.add_mutually_exclusive_group()
        group.add_argument("-r", "--root", metavar="DIR",
                           help="start a new experiment in a time-stamped folder under DIR")
        group.add_argument("-e", "--exp", metavar="DIR",
                           help="resume the experiment in DIR (its saved config is used without --config)")
        p.add_argument("--gt", metavar="PATH.zarr/KEY",
                       help="ground truth labels for evaluate, overriding [data] ground_truth")
        p.add_argument("--scheduler", metavar="ADDRESS",
                       help="join a running dask scheduler (tcp://host:8786) instead of starting a cluster")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages to the console")


def _add_checkpoint_options(p: argparse.ArgumentParser, init: bool) -> None:
    p.add_argument("--checkpoint", metavar="FILE.pt",
                   help="run this trained network (e.g. a shipped model); its [model], normalisation, [vote] and "
                        "[postprocess] settings apply unless --config/--set change them")
    if init:
        p.add_argument("--init", metavar="FILE.pt",
                       help="fine-tune: start training from this checkpoint's weights (its [model] and "
                            "normalisation settings apply unless --config/--set change them)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ppp-dist", epilog=_EPILOG,
                     description="PatchPerPix instance segmentation, blockwise on dask, for volumes "
                                 "larger than one machine.")
    parser.add_argument("--version", action="version", version=f"ppp_dist {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for i, module in enumerate(TASKS.values(), start=1):
        summary = module.SUMMARY
        p = sub.add_parser(module.NAME, help=f"({i}/{len(TASKS)}) {summary}",
                           description=f"({i}/{len(TASKS)}) {summary[0].upper()}{summary[1:]}.")
        _add_config_options(p)
        _add_checkpoint_options(p, init=module.NAME == "train")
    for group, members in GROUPS.items():
        p = sub.add_parser(group, help=f"run {' -> '.join(members)}",
                           description=f"Run the tasks {', '.join(members)} in order, as --do {group} did.")
        _add_config_options(p)
        _add_checkpoint_options(p, init="train" in members)
    p = sub.add_parser("plan", help=task("plan").SUMMARY,
                       description="Print what each stage would do on the input volume: blocks, halos, "
                                   "memory per block. Writes nothing.")
    _add_config_options(p, experiment=False)
    p = sub.add_parser("status", help=task("status").SUMMARY,
                       description="Show the config, outputs and per-stage progress of an experiment.")
    p.add_argument("exp", metavar="EXPERIMENT_DIR", help="the experiment folder")
    p.add_argument("-v", "--verbose", action="store_true")
    p = sub.add_parser("show-config", help=task("show-config").SUMMARY,
                       description="Print the resolved config as TOML, after validating it.")
    _add_config_options(p, experiment=False, volume=False)
    p = sub.add_parser("demo", help=task("demo").SUMMARY,
                       description="Run the pipeline end to end on the bundled FlyLight sample: a local "
                                   "dask cluster (dashboard link printed), planning, and every stage this "
                                   "version implements.")
    _add_config_options(p, volume=False)
    p.add_argument("--workers", type=int, default=2, help="local dask workers (default 2)")
    return parser


def _translate_do(argv: list[str]) -> list[str]:
    """``--do a b c [options]`` (the original's style) -> ``all-of a b c`` handled as a task list."""
    if "--do" not in argv and "-d" not in argv:
        return argv
    flag = "--do" if "--do" in argv else "-d"
    at = argv.index(flag)
    tasks, rest = [], argv[:at]
    j = at + 1
    while j < len(argv) and not argv[j].startswith("-"):
        tasks.append(argv[j])
        j += 1
    return ["__do__", ",".join(tasks)] + rest + argv[j:]


def one_line(message: str) -> str:
    """A message as one line (a library's multi-line text joined), so stderr holds exactly one sentence."""
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = _translate_do(argv)
    do_tasks: list[str] | None = None
    if argv and argv[0] == "__do__":
        do_tasks = [t for t in argv[1].split(",") if t]
        unknown = [t for t in do_tasks if t not in TASKS and t not in GROUPS]
        if not do_tasks or unknown:
            choices = ", ".join(list(TASKS) + list(GROUPS))
            print(f"ppp-dist: error: --do needs task names from {choices}"
                  + (f"; unknown: {', '.join(unknown)}" if unknown else ""), file=sys.stderr)
            return EXIT_USAGE
        argv = [do_tasks[0]] + argv[2:]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors
        return int(exit_.code or 0)
    if args.command is None:
        parser.print_help()
        print("ppp-dist: error: no command given; choose one of the commands above (e.g. ppp-dist label --help)",
              file=sys.stderr)
        return EXIT_USAGE

    from ppp_dist.errors import PppDistError, disk_full
    from ppp_dist.logs import setup_logging
    from ppp_dist.redact import redact
    from ppp_dist.tasks.chain import dispatch

    setup_logging("DEBUG" if getattr(args, "verbose", False) else "INFO")
    try:
        return dispatch(args, do_tasks)
    except PppDistError as err:
        print(f"ppp-dist: error: {redact(one_line(str(err)))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("ppp-dist: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as err:
        full = disk_full(err)
        if full is None:
            raise
        print(f"ppp-dist: error: {redact(full)}; free some space (or choose another --root / [database] path), "
              "then run the same command again: it resumes where it stopped", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
