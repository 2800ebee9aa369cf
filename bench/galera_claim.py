"""Which claim strategy suits a Galera cluster (issue 12): workers spread over the nodes, each
claiming and completing tasks one transaction at a time, in a scratch table of its own.

    python -m bench.galera_claim [--urls URL,URL,URL] [--tasks 3000] [--workers 6] [--batch 1]
                                 [--strategies one-node,shared,random-offset,node-shard,...]

``--urls`` defaults to ``$ASYNCTASK_TEST_GALERA_URL`` (``scripts/galera-cluster urls``). Worker
``i`` connects to node ``i mod nodes``, except in ``one-node``, where all connect to the first.
``--plain-url`` adds the same loop on a plain server (default the shared MariaDB on 3306, in a
scratch database dropped at the end; ``--plain-url ''`` leaves it out).

Row locks are per node: two nodes can both take the same row with ``FOR UPDATE SKIP LOCKED``,
and the second to commit fails with 1213 (a certification conflict, rolled back). A claim is
therefore retried here on 1213 with a little jitter, as the library's retry would, and every
1213 is counted, split into those at COMMIT and those raised by an earlier statement (a
transaction aborted by a replicated writeset while it ran).

Strategies:

- ``one-node``: every worker on the first node: no certification conflict can happen (the
  reference a spread must match).
- ``shared``: today's claim: the highest-priority, oldest pending task, from one shared index.
- ``random-offset``: the shared index, but each claim skips a random number (below
  ``--offset-spread``) of candidates first, falling back to the head when that finds nothing.
  It trades strict FIFO for fewer collisions.
- ``node-shard``: each task gets a shard (one per node, round robin at enqueue); the claim index
  is ``(status, shard, priority DESC, created_at, id)``; a worker claims its node's shard and
  steals from the other shards, in turn, when its own is dry.
- ``node-shard-offset-steal``: the same, but a steal skips a random number of the other
  shard's head first, where that shard's own workers claim.
- ``node-shard-tail-steal``: the same, but a steal takes the other shard's tail (its lowest
  priority, newest task: the index read backwards), so a stealer meets the shard's own workers
  only when little is left. (The cost: a stolen task jumps ahead of older ones.)
- ``node-shard-sync-wait``: node-shard with ``wsrep_sync_wait = 3`` (reads and updates wait
  for the cluster) on every worker session: what a causal read costs.
- ``node-shard-limit-row``: node-shard-offset-steal where every claim and completion also
  moves a running count in one shared row, as an exact cluster-wide ``max_concurrent`` must
  (a check that only reads sees nothing of the claims committing on other nodes): what that
  hot row costs.
- ``node-shard-limit-per-node``: the same with one count row per node, each node holding a
  share of the limit (a claim, stolen or not, counts on its own node's row): still exact
  cluster-wide, since the shares add up to the limit, and no row written from two nodes.
- ``node-shard-limit-touch``: the library's check (count the type's running tasks before the
  commit) made exact on a cluster by also bumping a sequence in the shared row in every claim:
  a claim that counted before another node's claim committed fails certification. Completions
  leave the row alone (a stale count can only be too high, which is safe).
- ``worker-shard``: node-shard with one shard per worker.

``--rounds N`` runs every strategy N times, interleaved, and ends with the medians.

Printed per strategy: claims/s (tasks claimed and completed over the time from the release to
the last worker's end), 1213s per claim, and double executions: tasks whose claim committed
more than once, counted from what the workers report, plus a check that every task ends done
exactly once in the table. Both must be 0.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import MySQLdb  # type: ignore[import-untyped]

GALERA_URL_ENV = "ASYNCTASK_TEST_GALERA_URL"
DEADLOCK = 1213
LOCK_WAIT_TIMEOUT = 1205
STRATEGIES = (
    "one-node",
    "shared",
    "random-offset",
    "node-shard",
    "node-shard-offset-steal",
    "node-shard-tail-steal",
    "node-shard-sync-wait",
    "node-shard-limit-row",
    "node-shard-limit-per-node",
    "node-shard-limit-touch",
    "worker-shard",
)
NODE_SHARDED = (
    "node-shard",
    "node-shard-offset-steal",
    "node-shard-tail-steal",
    "node-shard-sync-wait",
    "node-shard-limit-row",
    "node-shard-limit-per-node",
    "node-shard-limit-touch",
)
SHARDED = (*NODE_SHARDED, "worker-shard")
OFFSET_STEAL = (
    "node-shard-offset-steal",
    "node-shard-limit-row",
    "node-shard-limit-per-node",
    "node-shard-limit-touch",
)
# Reads (1) and UPDATE/DELETE (2) wait until the node has applied every earlier commit.
SYNC_WAIT_READS_AND_UPDATES = 3
INSERT_BATCH = 500
CLAIM_ORDER = "ORDER BY priority DESC, created_at, id"
# The same index read backwards: the lowest-priority, newest tasks first.
TAIL_ORDER = "ORDER BY priority, created_at DESC, id DESC"


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str
    password: str

    @classmethod
    def parse(cls, url: str) -> Server:
        parts = urlsplit(url.strip())
        return cls(
            parts.hostname or "127.0.0.1",
            parts.port or 3306,
            parts.username or "root",
            parts.password or "",
        )

    def connect(self, database: str | None = None) -> Any:
        connection = MySQLdb.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=database or "",
            autocommit=True,
        )
        cursor = connection.cursor()
        # The library's session: READ COMMITTED, UTC.
        cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        cursor.execute("SET time_zone = '+00:00'")
        return connection


@dataclass
class WorkerReport:
    worker: int
    claimed: list[int] = field(default_factory=list)
    claim_transactions: int = 0
    conflicts_at_commit: int = 0
    conflicts_before_commit: int = 0
    complete_conflicts: int = 0
    steals: int = 0


def limit_row(strategy: str, own_shard: int) -> str | None:
    """The count row a claim of this strategy moves, if any."""
    if strategy == "node-shard-limit-row":
        return "bench"
    if strategy == "node-shard-limit-per-node":
        return f"bench-{own_shard}"
    return None


def create_table(admin: Any, database: str, shards: int) -> None:
    cursor = admin.cursor()
    cursor.execute(f"DROP TABLE IF EXISTS `{database}`.claim_task")
    cursor.execute(f"DROP TABLE IF EXISTS `{database}`.claim_worker")
    shard_index = (
        "INDEX ix_claim (status, shard, priority DESC, created_at, id)"
        if shards > 1
        else "INDEX ix_claim (status, priority DESC, created_at, id)"
    )
    cursor.execute(
        f"""CREATE TABLE `{database}`.claim_task (
              id BIGINT NOT NULL PRIMARY KEY,
              shard SMALLINT NOT NULL,
              status VARCHAR(16) NOT NULL,
              priority INT NOT NULL DEFAULT 0,
              created_at DATETIME(6) NOT NULL,
              worker VARCHAR(32) NULL,
              completions INT NOT NULL DEFAULT 0,
              {shard_index}
            ) ENGINE=InnoDB"""
    )
    # The library raises and lowers the worker's current_load in the claim and the completion.
    cursor.execute(f"DROP TABLE IF EXISTS `{database}`.claim_limit")
    cursor.execute(
        f"""CREATE TABLE `{database}`.claim_limit (
              task_type VARCHAR(32) NOT NULL PRIMARY KEY,
              running INT NOT NULL DEFAULT 0,
              claims BIGINT NOT NULL DEFAULT 0
            ) ENGINE=InnoDB"""
    )
    cursor.executemany(
        f"INSERT INTO `{database}`.claim_limit (task_type) VALUES (%s)",
        [("bench",), *((f"bench-{shard}",) for shard in range(shards))],
    )
    cursor.execute(
        f"""CREATE TABLE `{database}`.claim_worker (
              worker VARCHAR(32) NOT NULL PRIMARY KEY,
              current_load INT NOT NULL DEFAULT 0
            ) ENGINE=InnoDB"""
    )


def fill(admin: Any, database: str, tasks: int, shards: int, workers: int) -> None:
    cursor = admin.cursor()
    for start in range(0, tasks, INSERT_BATCH):
        rows = [
            (i, i % shards, "pending", i) for i in range(start, min(tasks, start + INSERT_BATCH))
        ]
        cursor.executemany(
            f"INSERT INTO `{database}`.claim_task (id, shard, status, priority, created_at) "
            "VALUES (%s, %s, %s, 0, TIMESTAMPADD(MICROSECOND, %s, '2026-01-01'))",
            rows,
        )
    cursor.executemany(
        f"INSERT INTO `{database}`.claim_worker (worker) VALUES (%s)",
        [(f"w{i}",) for i in range(workers)],
    )


def wait_replicated(servers: list[Server], database: str, tasks: int) -> None:
    for server in servers:
        connection = server.connect(database)
        cursor = connection.cursor()
        if is_galera(connection):
            cursor.execute("SET SESSION wsrep_sync_wait = 1")
        cursor.execute("SELECT COUNT(*) FROM claim_task")
        (count,) = cursor.fetchone()
        connection.close()
        if count != tasks:
            raise SystemExit(f"{server.port}: {count} of {tasks} tasks replicated")


def is_galera(connection: Any) -> bool:
    cursor = connection.cursor()
    cursor.execute("SHOW VARIABLES LIKE 'wsrep_on'")
    row = cursor.fetchone()
    return row is not None and row[1] == "ON"


@dataclass(frozen=True)
class WorkerPlan:
    """What one worker process is told: where to connect and how to claim."""

    server: Server
    database: str
    strategy: str
    worker: int
    shards: int
    own_shard: int
    batch: int
    offset_spread: int


class Claimer:
    def __init__(self, connection: Any, plan: WorkerPlan, report: WorkerReport) -> None:
        self.connection = connection
        self.cursor = connection.cursor()
        self.strategy = plan.strategy
        self.worker_name = f"w{plan.worker}"
        self.shards = plan.shards
        self.own_shard = plan.own_shard
        self.batch = plan.batch
        self.offset_spread = plan.offset_spread
        self.report = report
        self.random = random.Random(plan.worker)
        self.limit_row = limit_row(plan.strategy, plan.own_shard)

    def claim(self) -> list[int]:
        if self.strategy in SHARDED:
            # Own shard first, then the others in turn, so stealers spread over the shards.
            ids = self._claim_retrying(f"AND shard = {self.own_shard}", 0)
            if ids:
                return ids
            for step in range(1, self.shards):
                ids = self._steal((self.own_shard + step) % self.shards)
                if ids:
                    self.report.steals += 1
                    return ids
            return []
        if self.strategy == "random-offset":
            offset = self.random.randrange(self.offset_spread)
            if offset:
                ids = self._claim_retrying("", offset)
                if ids:
                    return ids
        return self._claim_retrying("", 0)

    def _steal(self, shard: int) -> list[int]:
        """Another shard's tasks: from its head (where its own workers claim too), past a random
        number of them, or from its tail, so that a stealer meets the owners only when the
        shard is nearly empty."""
        shard_filter = f"AND shard = {shard}"
        if self.strategy == "node-shard-tail-steal":
            return self._claim_retrying(shard_filter, 0, TAIL_ORDER)
        if self.strategy in OFFSET_STEAL:
            offset = self.random.randrange(self.offset_spread)
            ids = self._claim_retrying(shard_filter, offset) if offset else []
            if ids:
                return ids
        return self._claim_retrying(shard_filter, 0)

    def _claim_retrying(
        self, shard_filter: str, offset: int, order: str = CLAIM_ORDER
    ) -> list[int]:
        attempt = 0
        while True:
            attempt += 1
            self.report.claim_transactions += 1
            stage = "statement"
            try:
                self.cursor.execute("BEGIN")
                self.cursor.execute(
                    f"SELECT id FROM claim_task WHERE status = 'pending' {shard_filter} "
                    f"{order} LIMIT {self.batch} OFFSET {offset} FOR UPDATE SKIP LOCKED"
                )
                ids = [row[0] for row in self.cursor.fetchall()]
                if not ids:
                    self.cursor.execute("ROLLBACK")
                    return []
                marks = ",".join(["%s"] * len(ids))
                self.cursor.execute(
                    f"UPDATE claim_task SET status = 'running', worker = %s WHERE id IN ({marks})",
                    [self.worker_name, *ids],
                )
                self.cursor.execute(
                    "UPDATE claim_worker SET current_load = current_load + %s WHERE worker = %s",
                    (len(ids), self.worker_name),
                )
                if self.limit_row:
                    self.cursor.execute(
                        "UPDATE claim_limit SET running = running + %s WHERE task_type = %s",
                        (len(ids), self.limit_row),
                    )
                if self.strategy == "node-shard-limit-touch":
                    # A write is what certification compares; an unchanged row is not written.
                    self.cursor.execute(
                        "UPDATE claim_limit SET claims = claims + 1 WHERE task_type = 'bench'"
                    )
                    self.cursor.execute("SELECT COUNT(*) FROM claim_task WHERE status = 'running'")
                    self.cursor.fetchall()
                stage = "commit"
                self.cursor.execute("COMMIT")
                return ids
            except MySQLdb.OperationalError as error:
                if error.args[0] not in (DEADLOCK, LOCK_WAIT_TIMEOUT):
                    raise
                self.cursor.execute("ROLLBACK")
                if stage == "commit":
                    self.report.conflicts_at_commit += 1
                else:
                    self.report.conflicts_before_commit += 1
                time.sleep(self.random.uniform(0, 0.001 * min(attempt, 20)))

    def complete(self, task_id: int) -> None:
        while True:
            try:
                self.cursor.execute("BEGIN")
                self.cursor.execute(
                    "UPDATE claim_task SET status = 'done', completions = completions + 1 "
                    "WHERE id = %s AND status = 'running' AND worker = %s",
                    (task_id, self.worker_name),
                )
                self.cursor.execute(
                    "UPDATE claim_worker SET current_load = current_load - 1 WHERE worker = %s",
                    (self.worker_name,),
                )
                if self.limit_row:
                    self.cursor.execute(
                        "UPDATE claim_limit SET running = running - 1 WHERE task_type = %s",
                        (self.limit_row,),
                    )
                self.cursor.execute("COMMIT")
                return
            except MySQLdb.OperationalError as error:
                if error.args[0] not in (DEADLOCK, LOCK_WAIT_TIMEOUT):
                    raise
                self.cursor.execute("ROLLBACK")
                self.report.complete_conflicts += 1


def worker_process(plan: WorkerPlan, ready: Any, go: Any, out: Any) -> None:
    report = WorkerReport(plan.worker)
    connection = plan.server.connect(plan.database)
    if plan.strategy == "node-shard-sync-wait":
        connection.cursor().execute(f"SET SESSION wsrep_sync_wait = {SYNC_WAIT_READS_AND_UPDATES}")
    claimer = Claimer(connection, plan, report)
    ready.release()
    go.wait()
    while True:
        ids = claimer.claim()
        if not ids:
            break
        report.claimed.extend(ids)
        for task_id in ids:
            claimer.complete(task_id)
    connection.close()
    out.put(report)


@dataclass
class Outcome:
    strategy: str
    servers: str
    tasks: int
    seconds: float
    claim_transactions: int
    conflicts_at_commit: int
    conflicts_before_commit: int
    complete_conflicts: int
    steals: int
    double_claims: int
    not_done: int
    completed_more_than_once: int
    loads_not_zero: int

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds if self.seconds else 0.0


def run_strategy(
    strategy: str,
    servers: list[Server],
    label: str,
    tasks: int,
    workers: int,
    batch: int,
    offset_spread: int,
) -> Outcome:
    database = f"atm_galera_bench_{uuid.uuid4().hex[:8]}"
    shards = len(servers) if strategy in NODE_SHARDED else workers if strategy in SHARDED else 1
    nodes = servers[:1] if strategy == "one-node" else servers
    admin = nodes[0].connect()
    admin.cursor().execute(f"CREATE DATABASE `{database}`")
    try:
        create_table(admin, database, shards)
        fill(admin, database, tasks, shards, workers)
        wait_replicated(nodes, database, tasks)
        context = mp.get_context("spawn")
        ready, go, out = context.Semaphore(0), context.Event(), context.Queue()
        processes = []
        for worker in range(workers):
            node = worker % len(nodes)
            own_shard = node if strategy in NODE_SHARDED else worker
            plan = WorkerPlan(
                server=nodes[node],
                database=database,
                strategy=strategy,
                worker=worker,
                shards=shards,
                own_shard=own_shard % shards,
                batch=batch,
                offset_spread=offset_spread,
            )
            process = context.Process(target=worker_process, args=(plan, ready, go, out))
            process.start()
            processes.append(process)
        for _ in processes:
            ready.acquire()
        started = time.perf_counter()
        go.set()
        reports: list[WorkerReport] = [out.get() for _ in processes]
        seconds = time.perf_counter() - started
        for process in processes:
            process.join()
            if process.exitcode:
                raise SystemExit(f"a worker exited with {process.exitcode}")
        claims = Counter(task for report in reports for task in report.claimed)
        cursor = nodes[0].connect(database).cursor()
        if len(nodes) > 1:
            cursor.execute("SET SESSION wsrep_sync_wait = 1")
        cursor.execute("SELECT COUNT(*) FROM claim_task WHERE status <> 'done'")
        (not_done,) = cursor.fetchone()
        cursor.execute("SELECT COUNT(*) FROM claim_task WHERE completions <> 1")
        (wrong_completions,) = cursor.fetchone()
        cursor.execute(
            "SELECT (SELECT COUNT(*) FROM claim_worker WHERE current_load <> 0)"
            " + (SELECT COUNT(*) FROM claim_limit WHERE running <> 0)"
        )
        (loads,) = cursor.fetchone()
        return Outcome(
            strategy=strategy,
            servers=label,
            tasks=sum(claims.values()),
            seconds=seconds,
            claim_transactions=sum(r.claim_transactions for r in reports),
            conflicts_at_commit=sum(r.conflicts_at_commit for r in reports),
            conflicts_before_commit=sum(r.conflicts_before_commit for r in reports),
            complete_conflicts=sum(r.complete_conflicts for r in reports),
            steals=sum(r.steals for r in reports),
            double_claims=sum(count - 1 for count in claims.values() if count > 1),
            not_done=int(not_done),
            completed_more_than_once=int(wrong_completions) - int(not_done),
            loads_not_zero=int(loads),
        )
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS `{database}`")
        admin.close()


def print_table(outcomes: list[Outcome], workers: int, batch: int) -> None:
    print(f"\n{workers} worker processes, claim limit {batch}, claim + complete per task\n")
    print(
        "| strategy | servers | tasks | s | claims/s | 1213 at COMMIT | 1213 earlier "
        "| 1213 per claim | 1213 in completions | steals | double executions | not done "
        "| loads not 0 |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for o in outcomes:
        conflicts = o.conflicts_at_commit + o.conflicts_before_commit
        per_claim = conflicts / o.tasks if o.tasks else 0.0
        print(
            f"| {o.strategy} | {o.servers} | {o.tasks} | {o.seconds:.1f} | {o.rate:.0f} "
            f"| {o.conflicts_at_commit} | {o.conflicts_before_commit} | {per_claim:.3f} "
            f"| {o.complete_conflicts} | {o.steals} "
            f"| {o.double_claims + max(o.completed_more_than_once, 0)} "
            f"| {o.not_done} | {o.loads_not_zero} |"
        )


def print_medians(outcomes: list[Outcome], rounds: int) -> None:
    print(f"\nMedians of {rounds} rounds (conflicts and steals: totals over all rounds)\n")
    print(
        "| strategy | servers | claims/s (median) | min-max | 1213 per claim "
        "| 1213 per completion | steals |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    groups: dict[tuple[str, str], list[Outcome]] = {}
    for outcome in outcomes:
        groups.setdefault((outcome.strategy, outcome.servers), []).append(outcome)
    for (strategy, servers), group in groups.items():
        rates = [o.rate for o in group]
        conflicts = sum(o.conflicts_at_commit + o.conflicts_before_commit for o in group)
        claimed = sum(o.tasks for o in group)
        print(
            f"| {strategy} | {servers} | {statistics.median(rates):.0f} "
            f"| {min(rates):.0f}-{max(rates):.0f} | {conflicts / claimed:.3f} "
            f"| {sum(o.complete_conflicts for o in group) / claimed:.3f} "
            f"| {sum(o.steals for o in group)} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--urls", default=os.environ.get(GALERA_URL_ENV, ""))
    parser.add_argument("--plain-url", default="mysql://root@127.0.0.1:3306")
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--offset-spread", type=int, default=32)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    if not args.urls:
        parser.error(f"give --urls or set {GALERA_URL_ENV} (scripts/galera-cluster urls)")
    servers = [Server.parse(url) for url in args.urls.split(",") if url.strip()]
    strategies = [name.strip() for name in args.strategies.split(",") if name.strip()]
    unknown = sorted(set(strategies) - set(STRATEGIES))
    if unknown:
        parser.error(f"unknown strategies {unknown}; known: {', '.join(STRATEGIES)}")
    runs: list[tuple[str, list[Server], str]] = []
    if args.plain_url:
        plain = Server.parse(args.plain_url)
        runs.append(("shared", [plain], f"plain :{plain.port}"))
    for strategy in strategies:
        on_one = strategy == "one-node"
        label = f":{servers[0].port}" if on_one else "+".join(f":{s.port}" for s in servers)
        runs.append((strategy, servers, label))
    outcomes = []
    for _ in range(args.rounds):
        for strategy, nodes, label in runs:
            outcomes.append(
                run_strategy(
                    strategy, nodes, label, args.tasks, args.workers, args.batch, args.offset_spread
                )
            )
            print_table(outcomes[-1:], args.workers, args.batch)
    print_table(outcomes, args.workers, args.batch)
    if args.rounds > 1:
        print_medians(outcomes, args.rounds)
    failed = [
        o.strategy
        for o in outcomes
        if o.double_claims or o.completed_more_than_once or o.not_done or o.loads_not_zero
    ]
    if failed:
        print(f"FAIL: double executions, unfinished tasks or loads left in {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
