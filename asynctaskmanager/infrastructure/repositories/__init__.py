"""SQLAlchemy implementations of the domain's repository interfaces.

A repository works inside the connection (and transaction) it is given and never commits:
the unit of work does. Each is a :class:`TableRepository` of its table, which holds the
shared create/find/get/update/delete, plus the table's own queries.
Statements are Core statements against the mapped tables, which keeps the hot paths free of
ORM identity-map work while the mapping stays the single description of the schema.
"""

from asynctaskmanager.infrastructure.repositories.table import TableRepository, only_reads, reads
from asynctaskmanager.infrastructure.repositories.task_configs import SqlTaskConfigRepository
from asynctaskmanager.infrastructure.repositories.task_logs import SqlTaskLogRepository
from asynctaskmanager.infrastructure.repositories.tasks import SqlTaskRepository
from asynctaskmanager.infrastructure.repositories.workers import SqlWorkerRepository

__all__ = [
    "SqlTaskConfigRepository",
    "SqlTaskLogRepository",
    "SqlTaskRepository",
    "SqlWorkerRepository",
    "TableRepository",
    "only_reads",
    "reads",
]
