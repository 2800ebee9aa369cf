"""The results: a table, the targets with PASS/MISS, and the Markdown file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.scale import ScaleCase

BACKENDS = ("memory", "sqlite", "mariadb", "postgresql")
BEFORE_AFTER = Path(__file__).resolve().parent / "before_after.md"


@dataclass
class Row:
    operation: str
    backend: str
    ours: float | None
    raw: float | None
    kombu: float | None
    kombu_op: str = ""


@dataclass(frozen=True)
class Latency:
    """Enqueue-to-start latency of runtime workers serving a steady producer."""

    backend: str
    processes: int
    threads: int
    rate: float  # asked of the producer, tasks per second
    achieved: float
    samples: int
    median_ms: float
    p95_ms: float
    max_ms: float


@dataclass
class Results:
    machine: dict[str, str]
    quick: bool = False
    scale_1m: bool = False
    rows: list[Row] = field(default_factory=list)
    batch: dict[str, tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict)
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)
    scale: list[ScaleCase] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)
    latency: list[Latency] = field(default_factory=list)
    seconds: float = 0.0

    def add(
        self, operation: str, backend: str, rates: dict[str, Any], *, kombu_op: str = ""
    ) -> None:
        self.rows.append(
            Row(
                operation,
                backend,
                rates.get("ours"),
                rates.get("raw"),
                rates.get("kombu"),
                kombu_op if rates.get("kombu") else "",
            )
        )

    def row(self, prefix: str, backend: str) -> Row | None:
        for row in self.rows:
            if row.operation.startswith(prefix) and row.backend == backend:
                return row
        return None


def _rate(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}"


def brief(rates: dict[str, Any]) -> str:
    return "  ".join(f"{name} {_rate(value)}/s" for name, value in rates.items())


@dataclass
class Target:
    name: str
    scope: str
    measured: str
    goal: str
    passed: bool | None  # None: not measured in this run

    @property
    def verdict(self) -> str:
        return "NOT RUN" if self.passed is None else ("PASS" if self.passed else "MISS")


def targets(results: Results) -> list[Target]:
    found: list[Target] = []

    def ratio_target(
        name: str, prefix: str, goal: float, backends: tuple[str, ...] = BACKENDS
    ) -> None:
        for backend in backends:
            row = results.row(prefix, backend)
            if row is None:
                continue
            if row.ours is None or not row.raw:
                continue
            value = row.ours / row.raw
            found.append(Target(name, backend, f"{value:.2f} x raw", f">= {goal} x", value >= goal))

    ratio_target("bulk enqueue vs raw executemany", "bulk enqueue", 0.5)
    ratio_target("single enqueue vs raw insert+commit", "enqueue, 1", 0.6)
    row = results.row("claim+complete, 4", "mariadb")
    if row is not None and row.ours:
        if row.raw:
            value = row.ours / row.raw
            found.append(
                Target(
                    "claim+complete, 4 processes, vs raw loop",
                    "mariadb",
                    f"{value:.2f} x raw",
                    ">= 0.6 x",
                    value >= 0.6,
                )
            )
        if row.kombu:
            value = row.ours / row.kombu
            found.append(
                Target(
                    "claim+complete, 4 processes, vs kombu get+ack",
                    "mariadb",
                    f"{value:.2f} x kombu",
                    ">= 3 x",
                    value >= 3,
                )
            )
    ratio_target("single enqueue on the SQLite file vs raw", "enqueue, 1", 0.5, ("sqlite",))
    ratio_target("batched claim+complete vs the raw batched loop", "batched:", 0.8)
    row = results.row("worker runtime", "mariadb")
    if row is not None and row.ours and row.kombu:
        value = row.ours / row.kombu
        found.append(
            Target(
                "worker runtime end to end vs kombu get+ack",
                "mariadb",
                f"{value:.2f} x kombu",
                ">= 3 x",
                value >= 3,
            )
        )
    for backend, (one, ten) in results.batch.items():
        if one.get("ours") and ten.get("ours"):
            value = ten["ours"] / one["ours"]
            found.append(
                Target(
                    "batch claim of 10 vs single claims, per task",
                    backend,
                    f"{value:.2f} x",
                    ">= 4 x",
                    value >= 4,
                )
            )
    by_backend: dict[str, dict[int, ScaleCase]] = {}
    for case in results.scale:
        by_backend.setdefault(case.backend, {})[case.rows] = case
    for backend, cases in by_backend.items():
        base = cases.get(10_000)
        big = cases.get(1_000_000)
        if base is None:
            continue
        if big is None:
            found.append(
                Target(
                    "p95 claim latency at 1M vs 10k",
                    backend,
                    "needs --scale-1m",
                    "<= 1.5 x",
                    None,
                )
            )
            continue
        value = big.p95_ms / base.p95_ms
        found.append(
            Target(
                "p95 claim latency at 1M vs 10k",
                backend,
                f"{value:.2f} x ({big.p95_ms:.1f} vs {base.p95_ms:.1f} ms)",
                "<= 1.5 x",
                value <= 1.5,
            )
        )
    for entry in results.memory:
        if entry["impl"] != "ours":
            continue
        found.append(
            Target(
                f"peak memory of bulk enqueue of {entry['tasks']:,} ({entry['mode']})",
                entry["backend"],
                f"{entry['peak_mb']:.0f} MB",
                "< 200 MB",
                entry["peak_mb"] < 200,
            )
        )
    return found


def render(results: Results) -> str:
    lines: list[str] = ["# Benchmark results", ""]
    if results.quick:
        lines += ["**Smoke run (`--quick`): tiny sizes, the numbers mean nothing.**", ""]
    lines += [
        "Written by `python -m bench.run` (`make bench`); how each number is taken is in",
        "[bench/README.md](README.md). Rates are operations (tasks) per second, the best of",
        "interleaved rounds; the ratios compare numbers from this one run.",
        "",
        "## Machine",
        "",
    ]
    lines += [f"- {key}: {value}" for key, value in results.machine.items()]
    lines += [f"- run time: {results.seconds:.0f} s", ""]

    lines += [
        "## Throughput",
        "",
        "| operation | backend | ours ops/s | raw ops/s | ours/raw | kombu ops/s | ours/kombu |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in results.rows:
        kombu = _rate(row.kombu) + (f" ({row.kombu_op})" if row.kombu_op else "")
        lines.append(
            f"| {row.operation} | {row.backend} | {_rate(row.ours)} | {_rate(row.raw)} | "
            f"{_ratio(row.ours, row.raw)} | {kombu} | {_ratio(row.ours, row.kombu)} |"
        )
    lines.append("")

    if results.scale:
        lines += [
            "## Claim latency as the table grows",
            "",
            "90% completed, 5% pending and due, 5% pending and scheduled a day ahead;",
            "`queue.claim(worker, 1)` end to end.",
            "",
            "| backend | tasks in table | samples | median ms | p95 ms | p95 vs 10k |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        base = {
            c.backend: c
            for c in results.scale
            if c.rows == min(x.rows for x in results.scale if x.backend == c.backend)
        }
        for case in results.scale:
            growth = case.p95_ms / base[case.backend].p95_ms
            lines.append(
                f"| {case.backend} | {case.rows:,} | {len(case.samples)} | "
                f"{case.median_ms:.2f} | {case.p95_ms:.2f} | {growth:.2f} |"
            )
        lines.append("")

    if results.latency:
        lines += [
            "## Enqueue-to-start latency under load",
            "",
            "Runtime workers (`run_worker`, not in burst mode) serve one producer that enqueues",
            "one task per call at a steady rate; each handler notes `time.time()` less the",
            "enqueue time carried in the payload.",
            "",
            "| backend | workers | rate asked /s | rate achieved /s | tasks | median ms |"
            " p95 ms | max ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for measured in results.latency:
            lines.append(
                f"| {measured.backend} | {measured.processes} x {measured.threads} threads |"
                f" {measured.rate:.0f} | {measured.achieved:.0f} | {measured.samples:,} |"
                f" {measured.median_ms:.1f} | {measured.p95_ms:.1f} | {measured.max_ms:.1f} |"
            )
        lines.append("")

    if results.memory:
        lines += [
            "## Memory",
            "",
            "One `enqueue_many` of the whole batch (building the requests included), in a fresh",
            "process: growth of the resident set's high-water mark (rss), or tracemalloc's peak",
            "(Python allocations only).",
            "",
            "| backend | contender | tasks | measure | peak MB | seconds |",
            "|---|---|---:|---|---:|---:|",
        ]
        for entry in results.memory:
            lines.append(
                f"| {entry['backend']} | {entry['impl']} | {entry['tasks']:,} | {entry['mode']} |"
                f" {entry['peak_mb']:.1f} | {entry['seconds']:.1f} |"
            )
        lines.append("")

    lines += ["## Targets", "", "| target | backend | measured | goal | verdict |"]
    lines += ["|---|---|---|---|---|"]
    for target in targets(results):
        lines.append(
            f"| {target.name} | {target.scope} | {target.measured} | {target.goal} |"
            f" **{target.verdict}** |"
        )
    lines.append("")
    if BEFORE_AFTER.exists():
        lines.append(BEFORE_AFTER.read_text(encoding="utf-8").rstrip())
        lines.append("")
    return "\n".join(lines)
