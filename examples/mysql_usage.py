"""The Python counterpart of the spec's MySQL usage example (examples/mysql_usage.go).

    mariadb -u root -e "CREATE DATABASE IF NOT EXISTS test"
    .venv/bin/python examples/mysql_usage.py

The connection comes from ASYNCTASK_MYSQL_HOST, _PORT, _USER, _PASSWORD and _DATABASE,
defaulting to 127.0.0.1:3306, root, no password, database ``test``.
"""

from __future__ import annotations

import os
from datetime import timedelta

from asynctaskmanager import (
    LogType,
    MySQLConfig,
    Task,
    TaskLog,
    TaskPriority,
    TaskStatus,
    open_storage,
)


def env(name: str, default: str) -> str:
    return os.environ.get(f"ASYNCTASK_MYSQL_{name}", default)


def main() -> None:
    # 1. The client: mysql.Config{...} and mysql.NewClient(cfg). Zero means no limit,
    #    as in Go's database/sql; here the spec's own tuning values.
    cfg = MySQLConfig(
        host=env("HOST", "127.0.0.1"),
        port=int(env("PORT", "3306")),
        user=env("USER", "root"),
        password=env("PASSWORD", ""),
        database=env("DATABASE", "test"),
        max_open=10,
        max_idle=5,
        max_life=timedelta(hours=1),
    )
    print(f"pool: {cfg.pool_options()}")

    # `with` plays the part of `defer client.Close()`: closing releases every connection.
    with open_storage(cfg) as client:
        # 2. client.InitSchema(): the Alembic migrations, up to the newest revision.
        client.upgrade()
        print(f"schema revision: {client.schema_revision()}")

        # 3. The four repositories.
        task_repo = client.tasks
        task_config_repo = client.task_configs
        task_log_repo = client.task_logs
        worker_repo = client.workers

        # 4. Use them; the interface is the same on every backend.
        task = Task(
            task_id="task-001",
            task_type="email_task",
            priority=TaskPriority.HIGH,
            status=TaskStatus.PENDING,
            payload={"to": "user@example.com"},
        )
        if task_repo.find(task.task_id) is not None:  # left over from an earlier run
            for log in task_log_repo.list_for_task(task.task_id):
                task_log_repo.delete(log.log_id)
            task_repo.delete(task.task_id)
        task_repo.create(task)
        task_log_repo.create(TaskLog(task.task_id, LogType.CREATED, None, TaskStatus.PENDING))

        stored = task_repo.get(task.task_id)
        print(
            f"created {stored.task_id}: type={stored.task_type} "
            f"priority={stored.priority.name} status={stored.status.value} "
            f"created_at={stored.created_at:%Y-%m-%d %H:%M:%S%z}"
        )
        print(
            f"{task_log_repo.count_for_task(task.task_id)} log row(s) for {task.task_id}, "
            f"{task_config_repo.count()} task config(s), {worker_repo.count()} worker(s)"
        )


if __name__ == "__main__":
    main()
