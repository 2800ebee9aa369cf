"""``python -m bench.instructions N``: N cycles of enqueue, get, claim and complete on the
memory backend, for counting instructions rather than seconds.

Instruction counts do not depend on what else the machine runs, which wall-clock rates on a
shared two-core machine do. Count two runs under callgrind and take the difference, so that
the interpreter's start, the imports and the migration cancel out::

    for n in 50 250; do PYTHONHASHSEED=0 valgrind --tool=callgrind \\
        --callgrind-out-file=/dev/null python -m bench.instructions $n 2>&1 | grep Collected; done

(instructions at 250 - instructions at 50) / 200 is the cost of one cycle.
"""

from __future__ import annotations

import sys

from asynctaskmanager import ExecutorType, TaskConfig, Worker, open_storage


def main(argv: list[str] | None = None) -> int:
    cycles = int((sys.argv[1:] if argv is None else argv)[0])
    with open_storage("memory") as storage:
        storage.task_configs.create(
            TaskConfig("bench", "bench", ExecutorType.FUNCTION, max_concurrent=100_000)
        )
        storage.queue.register_worker(Worker("w", "w", "local", capacity=100_000))
        for i in range(cycles):
            task = storage.queue.enqueue("bench", {"i": i})
            storage.tasks.get(task.task_id)
            [claimed] = storage.queue.claim("w", 1)
            storage.queue.complete(claimed, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
