"""``mindgap queue``: the operators' commands (stats, dead letters, retention).

Where the queue is comes from ``QueueSettings`` (``MINDGAP_QUEUE_REDIS_URL``,
``MINDGAP_QUEUE_PREFIX``); ``--redis-url`` and ``--prefix`` override it. The queue (and
redis) is imported only when a command runs, so ``mindgap`` starts without them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from mindgap.config import QueueSettings
from mindgap.options import command_options, fail

if TYPE_CHECKING:
    from mindgap.queue import Queue

queue_app = typer.Typer(help="Inspect and maintain the Redis job queue.",
                        no_args_is_help=True)


@contextmanager
def _opened(settings: QueueSettings) -> Iterator[Queue]:
    if importlib.util.find_spec("redis") is None:
        fail("mindgap queue needs the redis client: pip install 'mindgap[serve]'")
    from mindgap.queue import Queue

    queue = Queue.from_url(settings.redis_url, settings.prefix, retries=3,
                           socket_timeout=settings.socket_timeout_s, create_groups=False)
    try:
        yield queue
    finally:
        queue.close()


@queue_app.command()
@command_options(settings=QueueSettings)
def stats(settings: QueueSettings) -> None:
    """Print stream lengths, pending and undelivered entries, the trainer lag, dead letters
    and live workers as JSON."""
    with _opened(settings) as queue:
        typer.echo(queue.stats().model_dump_json(indent=2))


@queue_app.command()
@command_options(settings=QueueSettings)
def dead(settings: QueueSettings,
         limit: Annotated[int, typer.Option(min=1, help="Most dead letters to list.")] = 100,
         after: Annotated[str | None, typer.Option(
             help="Only dead letters after this entry id.")] = None) -> None:
    """List dead-lettered tasks and entries, oldest first, one JSON object a line."""
    with _opened(settings) as queue:
        for letter in queue.dead(limit, after):
            typer.echo(letter.model_dump_json())


@queue_app.command()
@command_options(settings=QueueSettings)
def trim(settings: QueueSettings,
         consumer_idle_s: Annotated[float, typer.Option(
             min=0, help="Remove consumers idle this long that hold no pending entry.")]
         = 3600.0) -> None:
    """Run retention: delete what every consumer group has acknowledged; print what went."""
    with _opened(settings) as queue:
        typer.echo(queue.trim(consumer_idle_ms=int(consumer_idle_s * 1000)).model_dump_json())
