"""ORM access on every backend: ``uow.session`` works inside the unit of work's own
transaction, so an ORM write and a repository write commit or roll back together.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from asynctaskmanager import ExecutorType, Storage, Task, TaskConfig, TaskStatus, UnitOfWork
from asynctaskmanager.orm import TaskConfigRow, TaskRow


def config_row(executor: ExecutorType) -> TaskConfigRow:
    """The mapped row of type "orm", its defaults left to the database."""
    return TaskConfigRow(
        task_type="orm", task_name="ORM tasks", executor_type=executor.value, retry_strategy="fixed"
    )


def write_both(uow: UnitOfWork) -> None:
    """An ORM insert of a task config and a repository insert of a task of that type, each
    seen by the other side before the unit of work ends."""
    uow.session.add(config_row(ExecutorType.FUNCTION))
    uow.tasks.create(Task("orm", {"via": "repository"}, task_id="t-orm"))
    uow.session.flush()
    # The repository reads the ORM's row, and the ORM the repository's: one transaction.
    config = uow.task_configs.get("orm")
    assert (config.task_name, config.default_timeout) == ("ORM tasks", 30)
    row = uow.session.scalars(select(TaskRow).where(TaskRow.task_type == "orm")).one()
    assert (row.task_id, row.status, row.payload) == (
        "t-orm",
        TaskStatus.PENDING.value,
        {"via": "repository"},
    )


def stored(storage: Storage) -> tuple[TaskConfig | None, Task | None]:
    return storage.task_configs.find("orm"), storage.tasks.find("t-orm")


def test_an_orm_write_and_a_repository_write_roll_back_together(storage: Storage) -> None:
    with storage.unit_of_work() as uow:
        write_both(uow)
    assert stored(storage) == (None, None)

    with pytest.raises(RuntimeError, match="after both writes"), storage.unit_of_work() as uow:
        write_both(uow)
        raise RuntimeError("after both writes")
    assert stored(storage) == (None, None)

    with storage.unit_of_work() as uow:
        write_both(uow)
        uow.rollback()
        uow.commit()  # nothing is left to commit
    assert stored(storage) == (None, None)


def test_an_orm_write_and_a_repository_write_commit_together(storage: Storage) -> None:
    with storage.unit_of_work() as uow:
        write_both(uow)
        uow.commit()
    config, task = stored(storage)
    assert config is not None and config.executor_type is ExecutorType.FUNCTION
    assert task is not None and task.task_type == "orm"


def test_commit_flushes_what_the_session_still_holds(storage: Storage) -> None:
    with storage.unit_of_work() as uow:
        uow.tasks.create(Task("orm", task_id="t-orm"))
        uow.session.add(config_row(ExecutorType.HTTP))
        uow.commit()  # no flush of our own: the unit of work's commit sends the insert
    config, task = stored(storage)
    assert config is not None and config.executor_type is ExecutorType.HTTP
    assert task is not None
    with storage.unit_of_work(read_only=True) as uow:
        rows = uow.session.scalars(select(TaskConfigRow.task_type)).all()
    assert rows == ["orm"]
