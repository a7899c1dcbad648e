"""``python -m hpo_bench run --suite cpu-small --out DIR`` / ``--quick``; ``python -m hpo_bench report DIR``;
``python -m hpo_bench record`` / ``simulate`` (the simulated benchmark: :mod:`hpo_bench.recording`, :mod:`hpo_bench.simulation`);
``python -m hpo_bench scale`` (the driver's cost per trial as a study grows: :mod:`hpo_bench.trial_cost`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .suite import CONTENDERS, SUITES


def parse_seeds(text: str) -> list[int]:
    """``--seeds``: ``"5"`` is seeds 0..4, ``"0,3"`` a list, ``"2-4"`` a range (ends included); lists
    and ranges combine (``"0,2-3"``).

    Raises:
        ValueError: an empty, negative or unparseable item, or a count below 1.
    """
    text = text.strip()
    if text.isdigit():
        if int(text) < 1:
            raise ValueError("--seeds: must be >= 1")
        return list(range(int(text)))
    seeds: list[int] = []
    for item in text.split(","):
        lo, dash, hi = item.strip().partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise ValueError(f"--seeds: '{item.strip()}' is not a seed or a range such as 2-4 (e.g. --seeds 5, 0,3 or 2-4)")
        if dash and int(hi) < int(lo):
            raise ValueError(f"--seeds: the range '{item.strip()}' starts above its end; write {hi}-{lo}")
        seeds += list(range(int(lo), int(hi) + 1)) if dash else [int(lo)]
    return sorted(set(seeds))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m hpo_bench", description="hpo's benchmark suite (see benchmarks/README.md).")
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a suite and write its report")
    run.add_argument("--suite", default="cpu-small", choices=sorted(SUITES), help="suite (default cpu-small)")
    run.add_argument("--quick", action="store_true", help="the tiny suite of the test suite (same report format)")
    run.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report folder (default benchmarks/results/<suite>-<UTC time>); must not hold a report yet",
    )
    run.add_argument("--tag", default=None, help="name of the default report folder instead of <suite>-<UTC time>")
    run.add_argument(
        "--device", default=None, help="Ultralytics device for every training (cpu, 0, 0,1); default the suite's (cpu; gpu: 0)"
    )
    run.add_argument(
        "--seeds",
        default=None,
        help="seeds: N (0..N-1), a list 0,3 or a range 2-4 (default: the suite's, 0-2 for cpu-small)",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out: keep its recorded studies, run the rest (e.g. --seeds 3-4 adds two seeds)",
    )
    run.add_argument("--problems", default=None, help="comma-separated problems to run (default: all of the suite)")
    run.add_argument(
        "--contenders", default=None, help=f"comma-separated contenders (default: the suite's); known: {', '.join(CONTENDERS)}"
    )
    run.add_argument(
        "--b2b-seeds",
        type=int,
        default=None,
        help="seeds whose studies are also replayed back to back in one process (default 1: the first)",
    )
    run.add_argument(
        "--b2b-contenders",
        default=None,
        help="comma-separated contenders whose studies are replayed back to back (default: the suite's)",
    )
    run.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="[PROBLEM.]FIELD=VALUE",
        help="scale a problem: trials, epochs, time_cap_s, imgsz, batch, images, val_images, or any "
        "Ultralytics train arg (e.g. --set digits-det.epochs=30 --set images=500); repeatable",
    )
    sub.add_parser(
        "protocol",
        add_help=False,
        help="issue 27's pre-registered protocol: run, noise, report, fidelity, fidelity-report (see protocol --help)",
    )
    rep = sub.add_parser("report", help="rebuild report.md, trials.csv and plots from DIR/results.json")
    rep.add_argument("dir", type=Path)
    default_rec = Path(__file__).resolve().parent / "results" / "recording" / "digits-cls"
    rec = sub.add_parser("record", help="train K configurations to the full epochs into a table (resumable)")
    rec.add_argument("--problem", default="digits-cls", help="problem to record (default digits-cls)")
    rec.add_argument("--configs", type=int, default=100, help="K, configurations to train (default 100)")
    rec.add_argument("--out", type=Path, default=default_rec, help=f"table folder (default {default_rec})")
    rec.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/hpo-bench-recording"),
        help="study folder; keep it to resume (default %(default)s)",
    )
    rec.add_argument("--device", default="cpu", help="Ultralytics device (default cpu)")
    rec.add_argument("--native-iterations", type=int, default=3, help="model.tune iterations timed (default 3)")
    sim = sub.add_parser("simulate", help="every backend against the recording's surrogate, on a simulated clock")
    sim.add_argument("--recording", type=Path, default=default_rec, help=f"recording folder (default {default_rec})")
    sim.add_argument("--seeds", type=int, default=50, help="seeds per contender (default 50)")
    sim.add_argument("--out", type=Path, default=default_rec.parent, help="report folder (default %(default)s)")
    sim.add_argument("--contenders", default=None, help="comma-separated (default all simulated contenders)")
    sim.add_argument("--processes", type=int, default=2, help="studies at once (default 2)")
    sim.add_argument("--surrogate", default="auto", choices=["auto", "knn", "rf"], help="surrogate model (default auto)")
    sim.add_argument(
        "--noise",
        default="residual",
        choices=["residual", "none"],
        help="trial noise: a recorded held-out residual curve per trial (default), or none (mean curves)",
    )
    sub.add_parser(
        "scale",
        add_help=False,
        help="the driver's CPU per trial, memory, show and resume times as a study grows to N trials (scale --help)",
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["protocol"]:
        from .protocol_cli import main as protocol_main

        return protocol_main(argv[1:])
    if argv[:1] == ["scale"]:  # its own options: python -m hpo_bench scale --help
        from .trial_cost import main as scale_main

        return scale_main(argv[1:])
    args = _parser().parse_args(argv)
    from .report import write_report

    if args.command == "report":
        results = json.loads((args.dir / "results.json").read_text())
        print(write_report(results, args.dir)["report"])
        return 0
    if args.command == "record":
        from .recording import record

        try:
            print(
                record(
                    args.problem,
                    configs=args.configs,
                    out=args.out,
                    work=args.work,
                    device=args.device,
                    native_iterations=args.native_iterations,
                )
            )
        except ValueError as e:
            print(f"benchmarks: error: {e}", file=sys.stderr)
            return 2
        return 0
    if args.command == "simulate":
        from .simulation import simulate

        if args.seeds < 1:
            print("benchmarks: error: --seeds: must be >= 1", file=sys.stderr)
            return 2
        if not (args.recording / "table.csv").is_file():
            print(
                f"benchmarks: error: --recording: no table.csv in '{args.recording}'; run `python -m hpo_bench record` first",
                file=sys.stderr,
            )
            return 2
        try:
            simulate(
                args.recording,
                seeds=args.seeds,
                out=args.out,
                processes=args.processes,
                surrogate=args.surrogate,
                noise=args.noise,
                contenders=[c.strip() for c in args.contenders.split(",")] if args.contenders else None,
            )
        except ValueError as e:
            print(f"benchmarks: error: {e}", file=sys.stderr)
            return 2
        print(args.out / "simulated.md")
        return 0
    from .run import check_run, run_suite
    from .suite import apply_overrides, suite

    name = "quick" if args.quick else args.suite
    try:
        s = suite(name)
        problems = apply_overrides(s["problems"], args.sets)
        if args.problems:
            wanted = [p.strip() for p in args.problems.split(",") if p.strip()]
            unknown = [w for w in wanted if w not in {p.name for p in problems}]
            if unknown:
                raise ValueError(f"--problems: unknown {', '.join(unknown)}; choose from {', '.join(p.name for p in problems)}")
            problems = [p for p in problems if p.name in wanted]
        contenders = [c.strip() for c in args.contenders.split(",")] if args.contenders else s["contenders"]
        seeds = parse_seeds(args.seeds) if args.seeds is not None else s["seeds"]
        if args.resume and args.out is None:
            raise ValueError("--resume: give the --out folder of the run to continue")
        out = (
            (
                args.out
                or Path(__file__).resolve().parent
                / "results"
                / (args.tag or f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
            )
            .expanduser()
            .resolve()
        )
        if (out / "results.json").exists() and not args.resume:
            raise ValueError(f"--out: '{out}' already holds a report; choose a new folder or continue it with --resume")
        check_run(problems, contenders, out, resume=args.resume)
    except ValueError as e:
        print(f"benchmarks: error: {e}", file=sys.stderr)
        return 2
    results = run_suite(
        problems=problems,
        contenders=contenders,
        seeds=seeds,
        out=out,
        device=str(args.device or s.get("device", "cpu")),
        b2b_seeds=args.b2b_seeds if args.b2b_seeds is not None else s["b2b_seeds"],
        b2b_contenders=[c.strip() for c in args.b2b_contenders.split(",")] if args.b2b_contenders else s["b2b_contenders"],
        suite_name=name,
        argv=argv,
        retrain=bool(s.get("retrain", True)),
        resume=args.resume,
    )
    paths = write_report(results, out)
    print(paths["report"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
