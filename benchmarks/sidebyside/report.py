"""Turning samples into medians with ranges, ratio tables, JSON, Markdown and a bar chart."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sidebyside.frameworks import Framework
from sidebyside.runs import Sample

__all__ = ["Outcome", "Stat", "markdown", "metrics", "write_chart", "write_json"]

DASH = "\u2013"  # en dash of ranges
TIMES = "\u00d7"


@dataclass(frozen=True, slots=True)
class Stat:
    """Median of the repeats with their min and max."""

    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Stat | None:
        """The stat of the values that were measured, or None if none were."""
        got = [v for v in values if v is not None]
        if not got:
            return None
        return cls(statistics.median(got), min(got), max(got), len(got))


@dataclass(slots=True)
class Outcome:
    """Everything measured for one framework in one run."""

    framework: Framework
    version: str
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    fill: dict[str, int] = field(default_factory=dict)  # queue depth per time-boxed workload

    def stat(self, workload: str, metric: str) -> Stat | None:
        """The stat of one metric over this framework's repeats of a workload."""
        return Stat.of([metrics(workload, s).get(metric) for s in self.samples.get(workload, [])])


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def metrics(workload: str, sample: Sample) -> dict[str, float | None]:
    """The figures one sample gives for its workload."""
    if workload == "latency":
        return {
            "p50": _pct(sample.latency_ms, 0.50),
            "p99": _pct(sample.latency_ms, 0.99),
            "result_p50": _pct(sample.result_ms, 0.50),
            "result_p99": _pct(sample.result_ms, 0.99),
        }
    return {
        "drain": sample.drain,
        "enqueue_single": sample.enqueue_single,
        "enqueue_batch": sample.enqueue_batch,
        "cpu_per_1000": sample.cpu_per_1000,
        "max_rss_mib": sample.max_rss_mib,
    }


def _fmt(stat: Stat | None, digits: int = 0) -> str:
    if stat is None:
        return DASH
    spec = f",.{digits}f"
    return f"{stat.median:{spec}} ({stat.min:{spec}}{DASH}{stat.max:{spec}})"


def _ratio(ours: Stat | None, theirs: Stat | None, is_upnext: bool) -> str:
    if is_upnext or ours is None or theirs is None or theirs.median == 0:
        return DASH
    return f"{ours.median / theirs.median:.2f}{TIMES}"


Column = tuple[str, str, str, int]  # header, workload, metric, digits


def _table(
    outcomes: Sequence[Outcome],
    columns: Sequence[Column],
    ratio_of: tuple[str, str] | None,
    section: str,
) -> list[str]:
    headers = ["framework", *(c[0] for c in columns)]
    # Enqueue rates on RabbitMQ depend on whether each publish waits for a confirm.
    confirms = any(c[2] == "enqueue_single" for c in columns) and any(
        o.framework.confirms for o in outcomes
    )
    if confirms:
        headers.append("publisher confirms")
    if ratio_of is not None:
        headers.append("upnext ÷ peer")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    upnext = next((o for o in outcomes if o.framework.name == "upnext"), None)
    workloads = {c[1] for c in columns}
    for outcome in outcomes:
        if section not in outcome.framework.workloads:
            continue  # a framework that does not take part in this workload
        boxed = any(s.partial for w in workloads for s in outcome.samples.get(w, []))
        cells = [outcome.framework.name + (" †" if boxed else "")]
        cells += [_fmt(outcome.stat(w, m), d) for _, w, m, d in columns]
        if confirms:
            cells.append(outcome.framework.confirms or DASH)
        if ratio_of is not None:
            ours = upnext.stat(*ratio_of) if upnext is not None else None
            mine = outcome.stat(*ratio_of)
            cells.append(_ratio(ours, mine, outcome is upnext))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


SECTIONS: list[tuple[str, str, list[Column], tuple[str, str] | None, str]] = [
    (
        "Burst: drain of no-op jobs by one worker process",
        "burst",
        [
            ("drain jobs/s", "burst", "drain", 0),
            ("enqueue 1-by-1 jobs/s", "burst", "enqueue_single", 0),
            ("enqueue batched jobs/s", "burst", "enqueue_batch", 0),
        ],
        ("burst", "drain"),
        "Ratio > 1: upnext drains faster.",
    ),
    (
        "Latency: submit → job running, one job at a time",
        "latency",
        [("p50 ms", "latency", "p50", 2), ("p99 ms", "latency", "p99", 2)],
        ("latency", "p50"),
        "Ratio < 1: upnext starts jobs sooner (p50).",
    ),
    (
        "Retry: jobs failing once, succeeding on retry",
        "retry",
        [("jobs/s", "retry", "drain", 0)],
        ("retry", "drain"),
        "Ratio > 1: upnext gets through faster.",
    ),
    (
        "Worker resources during the burst drain",
        "rss",
        [
            ("peak RSS MiB", "burst", "max_rss_mib", 1),
            ("CPU s / 1,000 jobs", "burst", "cpu_per_1000", 3),
        ],
        ("burst", "cpu_per_1000"),
        "Ratio < 1: upnext uses less CPU per job.",
    ),
]


def markdown(outcomes: Sequence[Outcome], meta: dict[str, Any], workloads: Sequence[str]) -> str:
    """The run as Markdown: one table per workload, failures, versions and settings."""
    out = [f"# upnext side by side on {meta['broker']} — {meta['date']}", ""]
    out.append(
        f"Machine: {meta['machine']}; load average {meta['load']}. {meta['sizes']}."
        f" Median of {meta['repeats']} repeats ({'min' + DASH + 'max'})."
    )
    for title, workload, columns, ratio_of, note in SECTIONS:
        if workload not in workloads:
            continue
        out += ["", f"## {title}", "", *_table(outcomes, columns, ratio_of, workload), "", note]
        if workload == "latency":
            upnext = next((o for o in outcomes if o.framework.name == "upnext"), None)
            if upnext is not None and upnext.stat("latency", "result_p50") is not None:
                out.append(
                    "upnext submit → result (not compared): p50 "
                    f"{_fmt(upnext.stat('latency', 'result_p50'), 2)} ms, p99 "
                    f"{_fmt(upnext.stat('latency', 'result_p99'), 2)} ms."
                )
    boxed = [
        (o.framework.name, w, "; ".join(s.partial or "complete" for s in ss))
        for o in outcomes
        for w, ss in o.samples.items()
        if any(s.partial for s in ss)
    ]
    if boxed:
        out += ["", "† Time-boxed drains, per repeat (measured on the jobs done within 5 s):", ""]
        out += [f"- {n} {w}: {notes}" for n, w, notes in boxed]
    failed = [(o.framework.name, w, e) for o in outcomes for w, e in o.errors.items()]
    if failed:
        out += ["", "## Failed runs", "", "| framework | workload | error |", "|---|---|---|"]
        out += [f"| {n} | {w} | {e.replace('|', '/')} |" for n, w, e in failed]
    out += [
        "",
        "## Versions and settings",
        "",
        "| framework | version | settings |",
        "|---|---|---|",
    ]
    out += [f"| {o.framework.name} | {o.version} | {o.framework.settings} |" for o in outcomes]
    return "\n".join(out) + "\n"


def _boxed(outcome: Outcome, workload: str) -> bool:
    return any(s.partial for s in outcome.samples.get(workload, []))


def write_json(path: Path, outcomes: Sequence[Outcome], meta: dict[str, Any]) -> None:
    """All samples and their medians, for later comparison."""
    frameworks: dict[str, Any] = {}
    for o in outcomes:
        summary = {
            w: {m: asdict(s) for m in metrics(w, Sample()) if (s := o.stat(w, m)) is not None}
            for w in o.samples
        }
        frameworks[o.framework.name] = {
            "version": o.version,
            "settings": o.framework.settings,
            "batch_api": o.framework.batch,
            "summary": summary,
            "samples": {w: [asdict(s) for s in ss] for w, ss in o.samples.items()},
            "errors": o.errors,
        }
    path.write_text(json.dumps({**meta, "frameworks": frameworks}, indent=1) + "\n")


def write_chart(path: Path, outcomes: Sequence[Outcome], meta: dict[str, Any]) -> str | None:
    """Bar chart of drain jobs/s per framework (median, min/max whiskers); None, or why not."""
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        return f"no chart: {exc}"
    rows = [
        (o.framework.name + (" †" if _boxed(o, "burst") else ""), o.stat("burst", "drain"))
        for o in outcomes
    ]
    names = [n for n, s in rows]
    medians = [s.median if s else 0.0 for _, s in rows]
    low = [s.median - s.min if s else 0.0 for _, s in rows]
    high = [s.max - s.median if s else 0.0 for _, s in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    colors = ["#d62728" if n.startswith("upnext") else "#7f7f7f" for n in names]
    ax.bar(names, medians, yerr=[low, high], capsize=4, color=colors)
    for x, (value, (_, stat)) in enumerate(zip(medians, rows, strict=True)):
        # Inside the bar, clear of the whiskers; a failed framework's name stays on the axis.
        label, where = (f"{value:,.0f}", value / 2) if stat else ("failed", 0.0)
        color = "white" if stat else "black"
        ax.annotate(label, (x, where), ha="center", va="center", color=color, rotation=90)
    ax.set_ylabel("drain jobs/s (one worker process; † time-boxed)")
    ax.set_title(f"No-op burst drain on {meta['broker']} — {meta['date']}, {meta['cores']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


Formatter = Callable[[Stat | None], str]
