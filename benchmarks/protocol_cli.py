"""``python -m hpo_bench protocol run|noise|report|before-sitting|fidelity|fidelity-report`` (see benchmarks/README.md)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["main"]

DEFAULT_PROTOCOL = Path(__file__).resolve().parent / "protocol.yaml"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m hpo_bench protocol", description="Run issue 27's pre-registered benchmark protocol."
    )
    sub = ap.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "run (part of) the protocol into --out, resumably, then write its report"),
        ("noise", "the noise floor only: one configuration trained noise_floor.trainings times per problem"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--protocol", type=Path, default=DEFAULT_PROTOCOL, help="protocol file (default %(default)s)")
        p.add_argument("--out", type=Path, default=None, help="run folder (continue it with --resume); required unless --dry-run")
        p.add_argument(
            "--dry-run",
            action="store_true",
            help="validate the protocol and the options as a run would (same refusals, exit 2) and list its units; nothing runs or is written",
        )
        p.add_argument("--problems", default=None, help="comma-separated problems (default: every problem of each condition)")
        p.add_argument("--seeds", default=None, help="protocol seeds, e.g. 1000-1009 or 100,101 (default: the evaluation seeds)")
        p.add_argument("--resume", action="store_true", help="continue the run in --out: keep its recorded units, run the rest")
        if name == "run":
            p.add_argument("--condition", default=None, help="comma-separated conditions (default: all, the primary first)")
            p.add_argument("--contenders", default=None, help="comma-separated contenders (the baseline always runs)")
            p.add_argument("--units", default=None, help="comma-separated unit kinds: prep, study, final, noise (default all)")
    rep = sub.add_parser("report", help="rewrite DIR/report.md and report.json from DIR/results.json (no training)")
    rep.add_argument("dir", type=Path)
    nm = sub.add_parser(
        "before-sitting",
        aliases=["new-machine"],
        help="before every sitting (protocol amendments 2 and 4): drop, and keep under 'dropped', the units of every "
        "condition, problem and seed whose studies are unfinished, so that they run again in one sitting; lists them",
    )
    nm.add_argument("dir", type=Path)
    nm.add_argument("--dry-run", action="store_true", help="list what would be dropped; write nothing")
    fid = sub.add_parser("fidelity", help="fidelity transfer: configurations at the trial length and at factor x it")
    fid.add_argument("--protocol", type=Path, default=DEFAULT_PROTOCOL, help="protocol file (default %(default)s)")
    fid.add_argument("--problem", required=True, help="the problem")
    fid.add_argument("--out", type=Path, required=True, help="folder (continue it with --resume)")
    fid.add_argument(
        "--incumbents", type=Path, nargs="*", default=[], help="protocol run folders whose incumbents join the configurations"
    )
    fid.add_argument("--configs", type=int, default=None, help="configurations in all (default: the protocol's fidelity.configs)")
    fid.add_argument(
        "--factor", type=int, default=None, help="the long schedule is FACTOR x the trial length (default: the protocol's)"
    )
    fid.add_argument(
        "--seed", type=int, default=None, help="protocol seed whose start they train from (default: the first development seed)"
    )
    fid.add_argument("--resume", action="store_true", help="continue the folder: keep its recorded trainings")
    frep = sub.add_parser("fidelity-report", help="rewrite DIR/fidelity.md and fidelity.json (no training)")
    frep.add_argument("dir", type=Path)
    return ap


def _csv(text: str | None) -> list[str] | None:
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def _dry_run(
    protocol: Any,
    sha: str,
    path: Path,
    out: Path | None,
    seeds: list[int],
    conditions: list[str],
    problems: list[str] | None,
    contenders: list[str] | None,
    units: list[str] | None,
    resume: bool,
) -> int:
    """``--dry-run``: the run's checks (raising its one-line errors), then its plan on stdout; writes nothing."""
    from collections import Counter

    from .harness import check_protocol_run, code_state, hpo_environment, plan_units, protocol_provenance

    target = out.expanduser().resolve() if out is not None else Path(tempfile.gettempdir()) / f"hpo-bench-dry-run-{os.getpid()}"
    check_protocol_run(
        protocol, sha, path, target, seeds=seeds, conditions=conditions, problems=problems, contenders=contenders, resume=resume
    )
    plan = plan_units(protocol, seeds=seeds, conditions=conditions, problems=problems, contenders=contenders, units=units)
    git = protocol_provenance(path, sha)["git"]
    code = code_state(Path(__file__).resolve().parent)
    print(f"protocol {protocol.name}: {path} (sha256 {sha[:12]}...)")
    print(
        "  git: "
        + (f"committed in {git['commit'][:10]} at {git['committed_at']}" if git and git["commit"] else "not committed")
        + (" (the working copy differs)" if git and git["dirty"] else "")
    )
    print("  code: " + (f"HEAD {code['commit'][:10]}{' + uncommitted changes' if code['dirty'] else ''}" if code else "no git"))
    print(f"  HPO_* in this environment: {', '.join(hpo_environment()) or 'none'}")
    print(f"  seeds: {seeds[0]}..{seeds[-1]} ({len(seeds)}), conditions: {', '.join(conditions)}")
    counts = Counter("/".join(u.split("/")[:2]) if not u.startswith(("noise", "prep")) else u.split("/")[0] for u in plan)
    for key, n in counts.items():
        print(f"  {key}: {n} units")
    print(f"  {len(plan)} units in all; nothing was run or written")
    return 0


def main(argv: list[str]) -> int:
    """Returns the exit code: 0 done, 1 nothing of what ran produced a result, 2 bad input (nothing written)."""
    args = _parser().parse_args(argv)
    from .protocol import load_protocol, parse_seed_set

    if args.command == "report":
        from .protocol_report import write_protocol_report

        f = args.dir / "results.json"
        if not f.is_file():
            print(f"benchmarks: error: DIR: no results.json in '{args.dir}'; give a protocol run folder", file=sys.stderr)
            return 2
        print(write_protocol_report(json.loads(f.read_text()), args.dir)["report"])
        return 0
    if args.command in ("before-sitting", "new-machine"):
        from .harness import drop_before_sitting

        try:
            gone = drop_before_sitting(args.dir, dry_run=args.dry_run)
        except ValueError as e:
            print(f"benchmarks: error: {e}", file=sys.stderr)
            return 2
        verb = "would drop" if args.dry_run else "dropped"
        print("\n".join(f"{verb} {u}" for u in gone) or "nothing to drop: no condition, problem and seed has unfinished studies")
        return 0
    if args.command == "fidelity-report":
        from .fidelity import write_fidelity_report

        f = args.dir / "fidelity.json"
        if not f.is_file():
            print(f"benchmarks: error: DIR: no fidelity.json in '{args.dir}'; give a fidelity folder", file=sys.stderr)
            return 2
        print(write_fidelity_report(json.loads(f.read_text()), args.dir))
        return 0
    try:
        protocol, sha = load_protocol(args.protocol)
        if args.command == "fidelity":
            from .fidelity import check_fidelity, run_fidelity

            plan = check_fidelity(
                protocol,
                args.protocol,
                args.out,
                problem=args.problem,
                incumbents=args.incumbents,
                configs=args.configs,
                factor=args.factor,
                seed=args.seed,
                resume=args.resume,
            )
            doc = run_fidelity(protocol, sha, args.protocol, args.out, plan, argv=argv)
            print(args.out / "fidelity.md")
            return 0 if doc.get("n_pairs", 0) >= 3 else 1
        seeds = parse_seed_set(args.seeds) if args.seeds else protocol.evaluation_seeds()
        units: list[str] | None
        contenders: list[str] | None
        if args.command == "noise":
            conditions, units, contenders = [protocol.noise_floor.condition], ["prep", "noise"], None
        else:
            conditions = _csv(args.condition) or list(protocol.conditions)
            conditions.sort(key=lambda c: c != protocol.statistics.primary_condition)
            units = _csv(args.units)
            contenders = _csv(args.contenders)
            unknown = [u for u in units or [] if u not in ("prep", "study", "final", "noise")]
            if unknown:
                raise ValueError(f"--units: unknown {', '.join(unknown)}; choose from prep, study, final, noise")
        from .harness import run_protocol

        if args.dry_run:
            return _dry_run(
                protocol, sha, args.protocol, args.out, seeds, conditions, _csv(args.problems), contenders, units, args.resume
            )
        if args.out is None:
            raise ValueError("--out: required (the run folder); or give --dry-run to check the protocol without running")
        results = run_protocol(
            protocol,
            sha,
            args.protocol,
            args.out.expanduser().resolve(),
            seeds=seeds,
            conditions=conditions,
            problems=_csv(args.problems),
            contenders=contenders,
            units=units,
            resume=args.resume,
            argv=argv,
        )
    except ValueError as e:
        print(f"benchmarks: error: {e}", file=sys.stderr)
        return 2
    from .protocol_report import write_protocol_report

    out = args.out.expanduser().resolve()
    print(write_protocol_report(results, out)["report"])
    ran = [results["units"][u] for u in results["sittings"][-1]["units"] if u in results["units"]]
    if ran and not any(u.get("status") == "done" for u in ran):
        print(
            "benchmarks: error: no unit of this sitting produced a result (see the report's 'Units without a result')",
            file=sys.stderr,
        )
        return 1
    return 0
