"""The machine and the software a run measured, for the results file."""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
from datetime import datetime, timezone
from importlib import metadata


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe(mariadb_version: str) -> dict[str, str]:
    uname = platform.uname()
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "uname": f"{uname.system} {uname.release} {uname.machine}",
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": sys.version.split()[0],
        "sqlalchemy": _version("SQLAlchemy"),
        "sqlite": sqlite3.sqlite_version,
        "mariadb": mariadb_version,
        "mysqlclient": _version("mysqlclient"),
        "kombu": _version("kombu"),
        "alembic": _version("alembic"),
    }
