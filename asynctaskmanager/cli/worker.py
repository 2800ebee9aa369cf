"""``asynctaskmanager worker``: the worker runtime (``asynctaskmanager.worker``) from the
command line. Its options are those of ``python -m asynctaskmanager.worker``, which this
command runs with the same arguments."""

from __future__ import annotations

import click


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    add_help_option=False,
)
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
def worker(arguments: tuple[str, ...]) -> None:
    """Run a worker: --app MODULE:HANDLERS [--url URL] [--concurrency N] [--burst]
    [--processes] [--shutdown-timeout S] [--worker-id ID] [--name NAME] [--log-level L].

    --help lists them all."""
    # Imported here: the runtime's imports are not needed by the other commands.
    from asynctaskmanager.worker.app import main

    raise click.exceptions.Exit(main(list(arguments)))
