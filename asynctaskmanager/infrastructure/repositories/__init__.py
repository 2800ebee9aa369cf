"""SQLAlchemy implementations of the domain's repository interfaces.

A repository works inside the connection (and transaction) it is given and never commits:
the unit of work does.
Statements are Core statements against the mapped tables, which keeps the hot paths free of
ORM identity-map work while the mapping stays the single description of the schema.
"""

from asynctaskmanager.infrastructure.repositories.task_configs import SqlTaskConfigRepository
from asynctaskmanager.infrastructure.repositories.task_logs import SqlTaskLogRepository
from asynctaskmanager.infrastructure.repositories.tasks import SqlTaskRepository
from asynctaskmanager.infrastructure.repositories.workers import SqlWorkerRepository

__all__ = [
    "SqlTaskConfigRepository",
    "SqlTaskLogRepository",
    "SqlTaskRepository",
    "SqlWorkerRepository",
]
