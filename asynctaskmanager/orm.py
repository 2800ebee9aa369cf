"""The ORM mapping, for queries of your own: the four mapped classes and their metadata.

``uow.session`` is an ORM :class:`~sqlalchemy.orm.Session` inside a unit of work's
transaction::

    from sqlalchemy import select
    from asynctaskmanager.orm import TaskRow

    with storage.unit_of_work() as uow:
        stuck = uow.session.scalars(select(TaskRow).where(TaskRow.status == "running")).all()
        uow.commit()

The mapping is the schema Alembic compares against; never ``metadata.create_all()`` a
production database (``asynctaskmanager upgrade`` or ``alembic upgrade head`` builds it).
"""

from asynctaskmanager.infrastructure.schema import (
    Base,
    TaskConfigRow,
    TaskLogRow,
    TaskRow,
    WorkerRow,
)

metadata = Base.metadata

__all__ = ["Base", "TaskConfigRow", "TaskLogRow", "TaskRow", "WorkerRow", "metadata"]
