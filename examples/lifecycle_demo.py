"""The task lifecycle, end to end: what `make demo` runs.

The database is ASYNCTASK_DATABASE_URL when it is set, else the embedded SQLite file
``asynctask.db`` in the working directory. The schema is brought to the newest revision
first. The demo owns the task types ``demo.*`` and the workers ``demo-worker-*``: it deletes
their rows from an earlier run before it starts, so it can run any number of times, and it
never touches anything else in the database.

    make demo
    ASYNCTASK_DATABASE_URL=mysql://root@127.0.0.1/test make demo
"""

from __future__ import annotations

from datetime import timedelta

from asynctaskmanager import (
    ExecutorType,
    RetryStrategy,
    Storage,
    Task,
    TaskConfig,
    TaskFilter,
    TaskPriority,
    TaskRequest,
    TaskStatus,
    TaskTypeDisabledError,
    UnknownTaskTypeError,
    Worker,
    open_storage,
)

EMAIL = "demo.email"
REPORT = "demo.report"
ARCHIVE = "demo.archive"  # configured but disabled
DEMO_TYPES = (EMAIL, REPORT, ARCHIVE)
WORKERS = ("demo-worker-1", "demo-worker-2")


def section(title: str) -> None:
    print(f"\n== {title}")


def show(task: Task) -> str:
    return f"{task.task_id}  {task.task_type:<12} {task.priority.name:<8} {task.status.value}"


def clean_previous_run(storage: Storage) -> int:
    """Delete the demo's own rows (tasks, their logs, configs, workers) in one transaction."""
    removed = 0
    with storage.unit_of_work() as uow:
        for task_type in DEMO_TYPES:
            while tasks := uow.tasks.list(TaskFilter(task_type=task_type), limit=500):
                for task in tasks:
                    for log in uow.task_logs.list_for_task(task.task_id):
                        uow.task_logs.delete(log.log_id)
                    uow.tasks.delete(task.task_id)
                    removed += 1
            if uow.task_configs.find(task_type) is not None:
                uow.task_configs.delete(task_type)
        for worker_id in WORKERS:
            if uow.workers.find(worker_id) is not None:
                uow.workers.delete(worker_id)
        uow.commit()
    return removed


def main() -> None:
    # open_storage() with no target: ASYNCTASK_DATABASE_URL, else sqlite:///asynctask.db.
    with open_storage(upgrade=True) as storage:
        url = storage.engine.url.render_as_string(hide_password=True)
        print(f"backend {storage.backend}: {url}, schema revision {storage.schema_revision()}")
        removed = clean_previous_run(storage)
        if removed:
            print(f"removed {removed} task(s) left by an earlier run of this demo")
        run(storage)


def run(storage: Storage) -> None:
    queue = storage.queue

    section("task configs")
    storage.task_configs.create(
        TaskConfig(
            EMAIL,
            "Send an email",
            ExecutorType.FUNCTION,
            retry_strategy=RetryStrategy.EXPONENTIAL,
            retry_delay=5,
            default_max_retry=3,
            max_concurrent=5,
        )
    )
    storage.task_configs.create(
        TaskConfig(
            REPORT,
            "Build a report",
            ExecutorType.HTTP,
            retry_strategy=RetryStrategy.FIXED,
            retry_delay=30,
            default_timeout=300,
            executor_config={"url": "http://reports.internal/build", "method": "POST"},
        )
    )
    storage.task_configs.create(
        TaskConfig(ARCHIVE, "Archive old data", ExecutorType.SCRIPT, enabled=False)
    )
    for config in storage.task_configs.list():
        if config.task_type in DEMO_TYPES:
            print(
                f"{config.task_type:<13} {config.executor_type.value:<9} "
                f"retry={config.retry_strategy.value}/{config.retry_delay}s "
                f"timeout={config.default_timeout}s max_concurrent={config.max_concurrent} "
                f"enabled={config.enabled}"
            )

    section("workers")
    one = queue.register_worker(Worker(WORKERS[0], "demo worker one", "10.0.0.1:7000", capacity=3))
    two = queue.register_worker(
        Worker(WORKERS[1], "demo worker two", "10.0.0.2:7000", capacity=2, supported_types=[EMAIL])
    )
    for worker in (one, two):
        types = "all types" if worker.supported_types is None else ", ".join(worker.supported_types)
        print(
            f"{worker.worker_id}: {worker.status.value}, capacity {worker.capacity}, {types}, "
            f"heartbeat {worker.last_heartbeat:%H:%M:%S} UTC"
        )

    section("enqueue")
    batch = queue.enqueue_many(
        [
            TaskRequest(EMAIL, {"to": "ana@example.com"}, priority=TaskPriority.LOW),
            TaskRequest(EMAIL, {"to": "bo@example.com"}),  # NORMAL
            TaskRequest(EMAIL, {"to": "chen@example.com", "subject": "你好 👋"}),
            TaskRequest(REPORT, {"month": "2026-10"}, priority=TaskPriority.HIGH),
            TaskRequest(EMAIL, {"to": "ops@example.com"}, priority=TaskPriority.CRITICAL),
            TaskRequest(REPORT, {"month": "2026-11"}, max_retry=0),
        ]
    )
    print(f"enqueue_many: {len(batch)} tasks in one transaction")
    single = queue.enqueue(REPORT, {"month": "2026-09"}, priority=TaskPriority.NORMAL)
    print(f"enqueue:      {show(single)}")
    delayed = queue.enqueue(EMAIL, {"to": "later@example.com"}, delay=timedelta(hours=1))
    print(f"delayed:      {show(delayed)}, due {delayed.scheduled_at:%H:%M:%S} UTC")
    for task_type, error_type in ((ARCHIVE, TaskTypeDisabledError), ("demo.nope", None)):
        try:
            queue.enqueue(task_type, {})
        except (TaskTypeDisabledError, UnknownTaskTypeError) as error:
            assert error_type is None or isinstance(error, error_type)
            print(f"refused:      {type(error).__name__}: {error}")

    section("claim (highest priority first, then first in, first out)")
    first = queue.claim(one.worker_id, limit=3)
    second = queue.claim(two.worker_id, limit=5)  # capacity 2, emails only
    for worker, claimed in ((one, first), (two, second)):
        for task in claimed:
            print(f"{worker.worker_id} got {show(task)}")
    print(f"{one.worker_id} claims again: {len(queue.claim(one.worker_id))} (at capacity)")
    held = queue.heartbeat(one.worker_id)
    print(f"heartbeat {one.worker_id}: holds {len(held)} task(s)")

    section("complete, fail, cancel")
    critical, report, email = first
    queue.complete(critical, {"message_id": "<1@example.com>"})
    print(f"completed        {critical.task_id}")
    queue.complete(second[0], {"message_id": "<2@example.com>"})
    print(f"completed        {second[0].task_id}")
    queue.fail(report, "report service answered 503")
    retried = storage.tasks.get(report.task_id)
    print(
        f"failed, retrying {report.task_id}: {retried.status.value}, "
        f"retry_count={retried.retry_count}, due {retried.scheduled_at:%H:%M:%S} UTC"
    )
    queue.fail(email, "mailbox does not exist", retry=False)
    print(f"failed for good  {email.task_id}")
    queue.cancel(delayed.task_id, "the recipient unsubscribed")
    print(f"cancelled        {delayed.task_id}")
    late = queue.complete(critical, {"again": True})
    print(f"a second complete of {critical.task_id} applies: {late}")

    section("tasks by status")
    for status in TaskStatus:
        count = sum(
            storage.tasks.count(TaskFilter(status=status, task_type=task_type))
            for task_type in DEMO_TYPES
        )
        print(f"{status.value:<10} {count}")
    for task in storage.tasks.list(TaskFilter(status=TaskStatus.RUNNING, task_type=EMAIL)):
        print(f"still running: {show(task)} on {task.worker_id}")

    section(f"log of task {report.task_id} ({REPORT}), oldest first")
    for log in storage.task_logs.list_for_task(report.task_id):
        before = log.from_status.value if log.from_status else "-"
        after = log.to_status.value if log.to_status else "-"
        parts = [f"{log.created_at:%H:%M:%S}", f"{log.log_type.value:<15}", f"{before} -> {after}"]
        parts += [text for text in (log.message, log.details and str(log.details)) if text]
        print("  ".join(parts))

    section("sweep and deregister")
    swept = queue.sweep()
    print(
        f"sweep: offline={swept.workers_marked_offline} requeued={swept.requeued} "
        f"failed={swept.failed}"
    )
    for worker_id in WORKERS:
        queue.deregister_worker(worker_id)
    for worker_id in WORKERS:
        worker = storage.workers.get(worker_id)
        print(f"{worker_id}: {worker.status.value}, current_load {worker.current_load}")
    pending = sum(
        storage.tasks.count(TaskFilter(status=TaskStatus.PENDING, task_type=task_type))
        for task_type in DEMO_TYPES
    )
    print(f"pending after deregistering (held tasks were requeued): {pending}")


if __name__ == "__main__":
    main()
