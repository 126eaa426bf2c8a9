"""upnext side by side with the job queues users would pick instead, on one broker.

    nox -s bench -- --broker redis|rabbitmq|postgres|memory
                    [--workload burst,latency,retry,rss] [--jobs N] [--repeats N] [--full]
    nox -s bench_smoke     # tiny counts: upnext (plain, observed) on memory://, arq on Redis (CI)

Each framework runs in its own worker process against the same local server;
see benchmarks/README.md for the fairness rules. Writes
benchmarks/results/<date>-<broker>.json, .md and .png, and prints the tables.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sidebyside.frameworks import BROKERS, WORKLOADS, Framework, server_url, version_of
from sidebyside.report import Outcome, markdown, write_chart, write_json
from sidebyside.runs import RunError, Workload, run_once

RESULTS = Path(__file__).resolve().parent / "results"


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--broker", choices=sorted(BROKERS), default="memory")
    parser.add_argument("--workload", default="burst,latency,retry,rss", help="comma-separated")
    parser.add_argument("--jobs", type=int, help="burst jobs (default 10,000; 20,000 with --full)")
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--retry-jobs", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="the 20,000-job burst")
    parser.add_argument(
        "--budget",
        type=float,
        default=570.0,
        help="seconds the repeats may take (default 570); the first repeat always runs",
    )
    parser.add_argument("--only", help="comma-separated framework names (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--smoke", action="store_true", help="tiny counts, memory + arq on Redis")
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also run upnext as of this git commit, interleaved (its ratio: this tree ÷ REF)",
    )
    args = parser.parse_args(argv)
    unknown = set(args.workload.split(",")) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s) {sorted(unknown)}; choose from {WORKLOADS}")
    return args


def workloads(args: argparse.Namespace) -> list[Workload]:
    """The workloads to run, sized from the arguments (rss is measured during burst)."""
    names = args.workload.split(",")
    burst = args.jobs or (20_000 if args.full else 10_000)
    plan = []
    if "burst" in names or "rss" in names:
        plan.append(Workload("burst", burst, max(10, burst // 20)))
    if "latency" in names:
        plan.append(Workload("latency", args.latency_jobs, 20))
    if "retry" in names:
        plan.append(Workload("retry", args.retry_jobs, 0))
    return plan


def machine() -> dict[str, Any]:
    """What the figures came from."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = os.cpu_count() or 0
    return {
        "cores": cores,
        "machine": f"{cores} cores, {model}, {platform.system()} {platform.release()},"
        f" Python {platform.python_version()}",
    }


def run_broker(
    broker: str,
    frameworks: Sequence[Framework],
    plan: Sequence[Workload],
    repeats: int,
    budget: float = float("inf"),
) -> tuple[list[Outcome], int]:
    """Repeat after repeat of every workload, frameworks interleaved so drift hits all alike.

    No repeat starts that would end past `budget` seconds, judging by the ones
    before (a slow machine gets fewer repeats rather than an unbounded run);
    returns the outcomes and the number of repeats done.
    """
    url = server_url(broker)
    outcomes = [Outcome(f, version_of(f, broker)) for f in frameworks]
    began = last = time.monotonic()
    done = 0
    for repeat in range(repeats):
        now = time.monotonic()
        if done and now - began + (now - last) > budget:  # as long as the last: overrun
            print(f"  time budget spent: {done} of {repeats} repeats", flush=True)
            break
        last = now
        for workload in plan:
            for outcome in outcomes:
                _run_one(outcome, broker, url, workload, repeat)
        done += 1
    return outcomes, done


def _run_one(outcome: Outcome, broker: str, url: str, workload: Workload, repeat: int) -> None:
    name = outcome.framework.name
    if workload.name in outcome.errors:
        return  # failed once: reported, not retried in later repeats
    if workload.name not in outcome.framework.workloads:
        return  # not a workload this framework takes part in (a dash in the tables)
    started = time.monotonic()
    try:
        sample = run_once(
            outcome.framework, broker, url, workload, outcome.fill.get(workload.name, 0)
        )
    except (RunError, OSError, KeyError, ValueError) as exc:
        outcome.errors[workload.name] = f"{type(exc).__name__}: {exc}"
        print(f"  {name:14} {workload.name:8} FAILED: {exc}", flush=True)
        return
    outcome.samples.setdefault(workload.name, []).append(sample)
    if workload.name == "burst" and sample.partial and workload.name not in outcome.fill:
        # Time-boxed: later repeats fill its queue 2x as deep as it drained (never below
        # 3,000), not more. Not for retry, where the depth is part of the workload.
        outcome.fill[workload.name] = max(3000, 2 * sample.drained)
    took = time.monotonic() - started
    note = f" [{sample.partial}]" if sample.partial else ""
    print(
        f"  {name:14} {workload.name:8} #{repeat + 1} {_brief(workload.name, sample)}{note}"
        f" ({took:.1f} s)",
        flush=True,
    )


def _brief(workload: str, sample: Any) -> str:
    if workload == "latency":
        ordered = sorted(sample.latency_ms)
        return f"p50 {ordered[len(ordered) // 2]:.2f} ms" if ordered else "no samples"
    return f"{sample.drain:,.0f} jobs/s" if sample.drain else "no drain"


def report(
    broker: str, outcomes: list[Outcome], args: argparse.Namespace, plan: list[Workload]
) -> int:
    """Print the tables and write JSON, Markdown and chart; exit code 1 if upnext failed."""
    today = datetime.date.today().isoformat()
    sizes = ", ".join(f"{w.name} {w.jobs:,} jobs (+{w.warm} warm-up)" for w in plan)
    meta = {
        "broker": broker,
        "date": today,
        "repeats": args.repeats,
        "sizes": sizes,
        "server": server_url(broker).split("@")[-1],
        "load": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
        **machine(),
    }
    text = markdown(outcomes, meta, args.workload.split(","))
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{today}-{broker}"
    write_json(stem.with_suffix(".json"), outcomes, meta)
    stem.with_suffix(".md").write_text(text)
    problem = write_chart(stem.with_suffix(".png"), outcomes, meta)
    print(f"wrote {stem}.json, .md" + (f" ({problem})" if problem else ", .png"))
    upnext_failed = any(o.errors for o in outcomes if o.framework.name == "upnext")
    return 1 if upnext_failed else 0


def smoke(args: argparse.Namespace) -> int:
    """Tiny counts through the whole harness: upnext (plain, observed) on memory://, arq."""
    args.jobs, args.latency_jobs, args.retry_jobs, args.repeats = 300, 10, 100, 1
    if args.out == RESULTS:  # a smoke's figures mean nothing: keep them out of the repo
        args.out = Path(tempfile.mkdtemp(prefix="upnext-bench-smoke-"))
    plan = workloads(args)
    code = 0
    for broker, only in (("memory", ("upnext", "upnext-observed")), ("redis", ("arq",))):
        frameworks = [f for f in BROKERS[broker] if f.name in only]
        outcomes, args.repeats = run_broker(broker, frameworks, plan, 1)
        code |= report(broker, outcomes, args, plan)
        if any(o.errors for o in outcomes):
            code = 1  # the smoke exists to notice rot: any failure fails it
    return code


def baseline(upnext: Framework, ref: str) -> Framework:
    """upnext as of commit `ref`: its sources exported to a temporary folder, imported first.

    The runner and the installed dependencies are this tree's; only upnext's
    own packages come from `ref`, so the two differ by upnext's code alone.
    """
    root = Path(__file__).resolve().parent.parent
    commit = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", ref],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    folder = Path(tempfile.mkdtemp(prefix=f"upnext-baseline-{commit}-"))
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", commit], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    packages = ("upnext-core", "upnext-redis", "upnext-rabbitmq", "upnext-postgres")
    source = tuple(str(folder / package / "src") for package in packages)
    return replace(upnext, name=f"upnext@{commit}", source=source)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so the running workers are stopped on the way out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark the arguments ask for."""
    signal.signal(signal.SIGTERM, _interrupt)
    args = parse(argv)
    if args.smoke:
        return smoke(args)
    frameworks = list(BROKERS[args.broker])
    if args.only:
        frameworks = [f for f in frameworks if f.name in args.only.split(",")]
    if args.baseline:
        frameworks.append(baseline(frameworks[0], args.baseline))
    plan = workloads(args)
    started = time.monotonic()
    print(
        f"{args.broker}: {', '.join(f.name for f in frameworks)}; {len(plan)} workloads", flush=True
    )
    outcomes, args.repeats = run_broker(args.broker, frameworks, plan, args.repeats, args.budget)
    code = report(args.broker, outcomes, args, plan)
    print(f"took {time.monotonic() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
