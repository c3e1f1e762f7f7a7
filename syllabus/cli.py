"""`syllabus list | run | report | data | score | predict` — the command line.

Bad input (unknown experiment, profile, key or value; missing or corrupt data) prints
one line and exits with status 2; a run that fails after starting exits with 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from syllabus.errors import RunFailed, UsageError
from syllabus.runs import is_main_process


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and status 2, like every other usage error
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="syllabus", description="Classic deep-learning course experiments, run end to end.")
    common = _Parser(add_help=False)
    # SUPPRESS: a subcommand's absent --threads must not overwrite one given before the subcommand
    common.add_argument("--threads", type=_positive_int, default=argparse.SUPPRESS, metavar="N",
                        help="CPU threads for torch (tiny models often run faster on 1)")
    p.add_argument("--threads", type=_positive_int, default=None, metavar="N", help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(subs, name: str, **kw) -> argparse.ArgumentParser:
        return subs.add_parser(name, parents=[common], **kw)  # every command takes --threads

    command(sub, "list", help="every experiment and its profiles")

    r = command(sub, "run", help="run an experiment (or all)")
    r.add_argument("name", nargs="?", help="experiment name or 'all'")
    r.add_argument("--profile", default=None,
                   help="smoke | demo | quick | full (default: quick; run all: demo, quick where no lighter one)")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--sweep", dest="sweeps", action="append", default=[], metavar="KEY=V1,V2")
    r.add_argument("--out", default="runs", help="root of run directories (default ./runs)")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--jobs", type=_positive_int, default=None, metavar="N",
                   help="run all: experiments at once, each on cores/N threads (default 2 on a CPU with 2+ cores)")
    r.add_argument("--launcher", default=None, metavar="{local,submitit-local,slurm}",
                   help="where sweep points run: here (local, the default), or one submitit job each")

    rep = command(sub, "report", help="re-render a run's (or a sweep's) report")
    rep.add_argument("run_dir")

    d = command(sub, "data", help="datasets: list, prepare")
    dsub = d.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    command(dsub, "list", help="every dataset, where it lives, whether it is present")
    prep = command(dsub, "prepare", help="generate an embedded set or fetch a real one")
    prep.add_argument("dataset")
    prep.add_argument("--download", action="store_true", help="allow downloading a real dataset")
    prep.add_argument("--set", dest="sets", action="append", default=[], metavar="data.dir=PATH")
    chk = command(dsub, "check", help="run every gold program of col775 or mathqa against its answer")
    chk.add_argument("dataset", help="col775 | mathqa")
    chk.add_argument("--file", help="a JSON file of that format (default: the shipped COL775 splits)")
    chk.add_argument("--json", action="store_true", help="print one JSON object")

    sc = command(sub, "score", help="score a predictions file (records + 'predicted' programs)")
    sc.add_argument("file")
    sc.add_argument("--json", action="store_true", help="print one JSON object")
    pr = command(sub, "predict", help="a trained math-programs run writes predictions for a JSON file")
    pr.add_argument("run_dir")
    pr.add_argument("--input", required=True, help="JSON list of {Problem, ...} records")
    pr.add_argument("--beam", type=int, default=None, help="beam size (default: the run's own)")
    pr.add_argument("--out", default=None, help="predictions file (default: print to stdout)")
    pr.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    return p


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def cmd_list() -> None:
    from syllabus.experiments import all_experiments

    experiments = all_experiments()
    width = max(len(exp.name) for exp in experiments)
    for exp in experiments:
        print(f"{exp.name:<{width}}  [{'|'.join(exp.profiles)}]  {exp.title}")


def cmd_run(args) -> None:
    from syllabus import runner
    from syllabus.config import parse_assignments
    from syllabus.experiments import get_experiment

    sets = parse_assignments(args.sets)
    sweeps = parse_assignments(args.sweeps, "--sweep")
    if args.seed is not None:
        sets["seed"] = str(args.seed)
    if args.resume:
        if args.sweeps:
            raise UsageError("--resume continues one run; it takes no --sweep")
        path = runner.resume(Path(args.resume), sets, args.device, args.launcher)
    elif not args.name:
        raise UsageError("run needs an experiment name, 'all', or --resume RUN_DIR")
    elif args.jobs is not None and args.name != "all":
        raise UsageError("--jobs sets how many experiments `run all` runs at once; one experiment takes --threads")
    elif args.name == "all":
        if sweeps or args.launcher not in (None, "local"):
            raise UsageError("run all uses each experiment's own sweep, here; --sweep and --launcher need one "
                             "experiment")
        from syllabus import run_all

        plans = run_all.plan_all(args.profile or "demo", sets, None)
        jobs = args.jobs or run_all.default_jobs(args.device)
        path = run_all.execute_all(plans, Path(args.out), args.device, jobs)
    else:
        p = runner.plan(get_experiment(args.name), args.profile or "quick", sets, sweeps,
                        launcher=args.launcher or "local")
        path = runner.execute(p, Path(args.out), args.device)
    if is_main_process():
        print(f"report: {path.resolve()}")


def cmd_data(args) -> None:
    from syllabus.config import parse_assignments
    from syllabus.data.catalog import DATASETS, get_dataset_entry

    if args.data_command == "check":
        from syllabus.programs.commands import data_check

        print(data_check(args.dataset, args.file, args.json))
        return
    if args.data_command == "list":
        for name, entry in DATASETS.items():
            state = "present" if entry.present(None) else "missing"
            print(f"{name:<10} {entry.kind:<9} {state:<8} {entry.location(None)}  {entry.description}")
        return
    sets = parse_assignments(args.sets)
    unknown = set(sets) - {"data.dir", "data.root"}
    if unknown:
        raise UsageError(f"data prepare takes --set data.dir= or data.root=, not {', '.join(sorted(unknown))}")
    override = sets.get("data.root") or sets.get("data.dir")
    print(get_dataset_entry(args.dataset).prepare(override, args.download))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "threads", None):
            from syllabus.threads import limit_threads

            limit_threads(args.threads)
        if args.command == "list":
            cmd_list()
        elif args.command == "run":
            cmd_run(args)
        elif args.command == "report":
            from syllabus import runner

            print(f"report: {runner.report(Path(args.run_dir)).resolve()}")
        elif args.command == "score":
            from syllabus.programs.commands import score_command

            print(score_command(args.file, args.json))
        elif args.command == "predict":
            from syllabus.experiments.math_programs import predict_command

            print(predict_command(args.run_dir, args.input, args.beam, args.out, args.device))
        else:
            cmd_data(args)
    except UsageError as e:
        # raised inside a DataLoader worker, the message carries the worker's traceback
        lines = [line for line in str(e).splitlines() if line.strip()] or [repr(e)]
        print(f"syllabus: error: {lines[-1].strip()}", file=sys.stderr)
        return 2
    except RunFailed as e:
        print(f"syllabus: run failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        from syllabus import runs

        where = f"syllabus run --resume {runs.INTERRUPTED}" if runs.INTERRUPTED is not None else "--resume RUN_DIR"
        print(f"syllabus: interrupted; continue with {where}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
