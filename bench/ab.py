"""``python -m bench.ab BEFORE_TREE``: the same benchmark on two source trees, interleaved.

For before/after numbers of a library change: BEFORE_TREE is a copy of the repository with
the change left out (``git worktree add /tmp/before <commit>``, or a copy with the old files).
Runs ``python -m bench.run`` alternately in BEFORE_TREE and in this repository (each
imports its own ``asynctaskmanager``: ``-m`` puts the working directory first on the path),
``--runs`` times each, and prints a Markdown table of the best ``ours`` rate of each row
on each side. Arguments after ``--`` go to bench.run (default: no scale, no memory).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def _throughput(markdown: str) -> dict[tuple[str, str], float]:
    rows: dict[tuple[str, str], float] = {}
    in_table = False
    for line in markdown.splitlines():
        if line.startswith("| operation |"):
            in_table = True
            continue
        if in_table and not line.startswith("|"):
            break
        if in_table and not line.startswith("|---"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if cells[2] != "n/a":
                rows[(cells[0], cells[1])] = float(cells[2].replace(",", ""))
    return rows


def _run(tree: Path, bench_args: list[str]) -> dict[tuple[str, str], float]:
    with tempfile.NamedTemporaryFile(suffix=".md", delete=False) as out:
        path = Path(out.name)
    subprocess.run(
        [sys.executable, "-m", "bench.run", *bench_args, "--out", str(path)],
        cwd=tree,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    rows = _throughput(path.read_text(encoding="utf-8"))
    path.unlink()
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    bench_args = ["--skip", "scale,memory", "--rounds", "2"]
    if "--" in argv:
        split = argv.index("--")
        argv, bench_args = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(prog="python -m bench.ab")
    parser.add_argument("before", type=Path, help="the tree without the change")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)
    best: dict[str, dict[tuple[str, str], float]] = {"before": {}, "after": {}}
    for run in range(args.runs):
        for side, tree in (("before", args.before), ("after", HERE)):
            print(f"run {run + 1}/{args.runs}: {side} ({tree})", file=sys.stderr, flush=True)
            for key, value in _run(tree, bench_args).items():
                best[side][key] = max(value, best[side].get(key, 0.0))
    print("| operation | backend | before ops/s | after ops/s | after/before |")
    print("|---|---|---:|---:|---:|")
    for key, after in best["after"].items():
        before = best["before"].get(key)
        ratio = f"{after / before:.2f}" if before else "n/a"
        shown = f"{before:,.0f}" if before else "n/a"
        print(f"| {key[0]} | {key[1]} | {shown} | {after:,.0f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
