"""Running a worker from the command line: ``python -m asynctaskmanager.worker --app
module:handlers``, and the functions a CLI calls (:func:`load_handlers`,
:func:`run_from_app`)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from asynctaskmanager import ConfigurationError, ValidationError, open_storage
from asynctaskmanager.worker.handlers import Handler
from asynctaskmanager.worker.records import RunSummary
from asynctaskmanager.worker.runtime import WorkerRuntime


def load_handlers(app_path: str) -> dict[str, Handler]:
    """The handlers mapping named by ``"package.module:attribute"`` (the attribute may be
    dotted: ``"module:registry.handlers"``). Raises :class:`ConfigurationError` saying what
    is wrong with the path or what it names."""
    if not isinstance(app_path, str) or app_path.count(":") != 1:
        raise ConfigurationError(
            f"--app must look like 'package.module:handlers', got {app_path!r}"
        )
    module_name, attribute = app_path.split(":")
    if not module_name or not attribute:
        raise ConfigurationError(
            f"--app must look like 'package.module:handlers', got {app_path!r}"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and module_name.startswith(error.name):
            raise ConfigurationError(
                f"--app {app_path}: no module named {error.name!r} (is it on PYTHONPATH?)"
            ) from error
        raise ConfigurationError(
            f"--app {app_path}: importing {module_name!r} failed: {error}"
        ) from error
    except Exception as error:
        raise ConfigurationError(
            f"--app {app_path}: importing {module_name!r} failed: {type(error).__name__}: {error}"
        ) from error
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigurationError(
                f"--app {app_path}: {module_name!r} has no attribute {attribute!r}"
            ) from None
    if not isinstance(target, Mapping) or not target:
        raise ConfigurationError(
            f"--app {app_path}: must name a non-empty mapping of task type to handler, "
            f"not {type(target).__name__}"
        )
    for task_type, handler in target.items():
        if not isinstance(task_type, str) or not callable(handler):
            raise ConfigurationError(
                f"--app {app_path}: {task_type!r} must map a task type (str) to a callable, "
                f"not {type(handler).__name__}"
            )
    return dict(target)


def run_from_app(
    app_path: str,
    url: str | None = None,
    *,
    concurrency: int = 4,
    burst: bool = False,
    use_processes: bool = False,
    shutdown_timeout: float = 30.0,
    worker_id: str | None = None,
    name: str | None = None,
) -> RunSummary:
    """Load ``app_path``'s handlers, open the storage at ``url`` (default:
    ``ASYNCTASK_DATABASE_URL``, else ``sqlite:///asynctask.db``), run a worker with signal
    handling until it stops, and close the storage.

    Raises :class:`ConfigurationError` or :class:`ValidationError` for bad arguments, before
    anything touches the database. A caller that exits afterwards should check
    ``handed_back`` / ``stopped_at_once`` and exit with :func:`os._exit` if handlers may still
    run (Python waits for pool threads at exit); :func:`main` does.
    """
    handlers = load_handlers(app_path)
    with open_storage(url) as storage:
        runtime = WorkerRuntime(
            storage,
            handlers,
            worker_id=worker_id,
            name=name,
            concurrency=concurrency,
            burst=burst,
            use_processes=use_processes,
            shutdown_timeout=shutdown_timeout,
        )
        return runtime.run()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m asynctaskmanager.worker``: 0 after a clean stop, 1 after a stop at once
    or when tasks had to be handed back, 2 for bad arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m asynctaskmanager.worker",
        description="Run a worker: claim tasks of the handlers' types and run them.",
    )
    parser.add_argument("--app", required=True, help="module:attribute naming the handlers")
    parser.add_argument("--url", help="database URL (default: $ASYNCTASK_DATABASE_URL)")
    parser.add_argument("--concurrency", type=int, default=4, help="tasks at once (4)")
    parser.add_argument("--burst", action="store_true", help="exit when nothing is runnable")
    parser.add_argument("--processes", action="store_true", help="run handlers in processes")
    parser.add_argument(
        "--shutdown-timeout", type=float, default=30.0, help="seconds to finish on SIGTERM"
    )
    parser.add_argument("--worker-id", help="default: host-pid-random")
    parser.add_argument("--name", help="the worker's name in the store")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO (default), WARNING")
    arguments = parser.parse_args(argv)
    logging.basicConfig(
        level=arguments.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        summary = run_from_app(
            arguments.app,
            arguments.url,
            concurrency=arguments.concurrency,
            burst=arguments.burst,
            use_processes=arguments.processes,
            shutdown_timeout=arguments.shutdown_timeout,
            worker_id=arguments.worker_id,
            name=arguments.name,
        )
    except (ConfigurationError, ValidationError) as error:
        print(f"asynctaskmanager worker: {error}", file=sys.stderr)
        return 2
    code = 1 if summary.stopped_at_once or summary.handed_back else 0
    if summary.stopped_at_once or summary.handed_back:
        # Handlers still run in pool threads, which Python would wait for at exit.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
