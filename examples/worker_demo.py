"""The worker runtime, end to end: what `make demo` runs after the lifecycle demo.

It enqueues a few tasks of the types ``demo.worker.*`` and runs a worker in burst mode until
none is left: emails succeed, a flaky task fails once and succeeds on its retry, a broken one
fails for good, and a type limited to one running task waits its turn. Like the lifecycle
demo it deletes its own rows (those types, the worker ``demo-worker-runtime``) from an
earlier run first and touches nothing else.

    python examples/worker_demo.py
    ASYNCTASK_DATABASE_URL=mysql://root@127.0.0.1/test python examples/worker_demo.py
"""

from __future__ import annotations

import logging
import time
from typing import Any

from asynctaskmanager import (
    ExecutorType,
    Storage,
    Task,
    TaskConfig,
    TaskFilter,
    TaskRequest,
    TaskStatus,
    open_storage,
)
from asynctaskmanager.worker import run_worker

EMAIL = "demo.worker.email"
FLAKY = "demo.worker.flaky"
BROKEN = "demo.worker.broken"
EXPORT = "demo.worker.export"  # max_concurrent=1
DEMO_TYPES = (EMAIL, FLAKY, BROKEN, EXPORT)
WORKER_ID = "demo-worker-runtime"


def send_email(task: Task) -> Any:
    time.sleep(0.05)
    return {"sent_to": task.payload["to"]}


def flaky(task: Task) -> Any:
    if task.retry_count == 0:
        raise ConnectionError("the service answered 503")
    return {"attempt": task.retry_count + 1}


def broken(task: Task) -> Any:
    raise KeyError("customer_id")


def export(task: Task) -> Any:
    time.sleep(0.2)
    return {"rows": 100 * task.payload["part"]}


HANDLERS = {EMAIL: send_email, FLAKY: flaky, BROKEN: broken, EXPORT: export}


def clean_previous_run(storage: Storage) -> None:
    with storage.unit_of_work() as uow:
        for task_type in DEMO_TYPES:
            while tasks := uow.tasks.list(TaskFilter(task_type=task_type), limit=500):
                for task in tasks:
                    for log in uow.task_logs.list_for_task(task.task_id):
                        uow.task_logs.delete(log.log_id)
                    uow.tasks.delete(task.task_id)
            if uow.task_configs.find(task_type) is not None:
                uow.task_configs.delete(task_type)
        if uow.workers.find(WORKER_ID) is not None:
            uow.workers.delete(WORKER_ID)
        uow.commit()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="  %(levelname)-7s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with open_storage(upgrade=True) as storage:
        print(f"\n== worker runtime on {storage.backend}")
        clean_previous_run(storage)
        options: dict[str, dict[str, Any]] = {
            EMAIL: {},
            FLAKY: {"retry_delay": 0},
            BROKEN: {"default_max_retry": 0},
            EXPORT: {"max_concurrent": 1},
        }
        for task_type in DEMO_TYPES:
            storage.task_configs.create(
                TaskConfig(task_type, task_type, ExecutorType.FUNCTION, **options[task_type])
            )
        storage.queue.enqueue_many(
            [TaskRequest(EMAIL, {"to": f"user{n}@example.com"}) for n in range(4)]
            + [TaskRequest(FLAKY), TaskRequest(BROKEN)]
            + [TaskRequest(EXPORT, {"part": part}) for part in (1, 2, 3)]
        )
        print("enqueued 9 tasks; running a worker with 3 threads until none is left (--burst)")
        summary = run_worker(
            storage, HANDLERS, worker_id=WORKER_ID, concurrency=3, burst=True, sweep_interval=None
        )
        print(
            f"\n== done: {summary.completed} completed, {summary.failed} failed attempts, "
            f"{len(summary.handed_back)} handed back"
        )
        for task_type in DEMO_TYPES:
            for task in storage.tasks.list(TaskFilter(task_type=task_type)):
                outcome = task.result if task.status is TaskStatus.COMPLETED else task.error_message
                print(
                    f"{task.task_id}  {task_type:<19} {task.status.value:<9} "
                    f"attempts={task.retry_count + 1}  {outcome}"
                )


if __name__ == "__main__":
    main()
