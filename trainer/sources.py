"""Where training examples come from, with a position that checkpoints can save.

``ExampleStream`` is the interface the loop uses; ``FileStream`` reads JSON lines or Parquet
files of ``AlignedExample``; ``mindgap.trainer.redis_source.RedisStream`` reads the live Redis
stream. (An example's ``source``, self/guided/expert, is ``mindgap.schemas.Source``.)

Protocol of one optimizer step, on every rank::

    batch = stream.next_batch(global_batch)   # this rank's share of the next global batch
    ... forward, backward, optimizer step ...
    stream.commit([key for key, _ in batch])  # only after the step that used them
    stream.state()                            # what a checkpoint saves (committed position)
    stream.settle()                           # after the checkpoint is written (or at the end)
"""

from __future__ import annotations

import abc
import hashlib
import json
import random
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mindgap.jsonl import numbered_lines
from mindgap.schemas import AlignedExample


class ExampleStream(abc.ABC):
    """A stream of ``(key, AlignedExample)`` for the trainer.

    Keys are unique strings the stream understands (file: ``"epoch:offset"``; Redis: the
    stream entry id). ``state()`` describes the *committed* position: restoring it with
    ``load_state`` makes ``next_batch`` return the first example not yet committed, so a run
    resumed from a checkpoint neither repeats nor skips an example.
    """

    @abc.abstractmethod
    def next_batch(self, n: int) -> list[tuple[str, AlignedExample]]:
        """This rank's share of the next global batch of ``n`` examples; fewer (or none) when
        the stream is exhausted. Every rank calls it once per optimizer step."""

    @abc.abstractmethod
    def commit(self, keys: Sequence[str]) -> None:
        """Mark examples as trained on (called after the optimizer step that used them)."""

    @abc.abstractmethod
    def state(self) -> dict[str, Any]:
        """A JSON-able description of the committed position."""

    @abc.abstractmethod
    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from a position returned by ``state()``."""

    def metrics(self) -> dict[str, float]:
        """Numbers about the last batch served, for its step's record (none by default)."""
        return {}

    def settle(self) -> None:  # noqa: B027 - optional hook
        """The position of the last ``state()`` is durable (a checkpoint holds it, or the run
        ended): a live stream acknowledges the examples it covers."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


def _read_records(path: Path) -> list[str]:
    """Raw JSON text of each example (parsed lazily, when served)."""
    if path.suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return [json.dumps(row) for row in pq.read_table(path).to_pylist()]
    return [raw.decode("utf-8") for _, raw in numbered_lines(path)]


def read_examples(paths: Sequence[str | Path]) -> list[AlignedExample]:
    """Every aligned example of JSON lines or Parquet files, in order."""
    return [AlignedExample.model_validate_json(raw) for p in paths
            for raw in _read_records(Path(p))]


class FileStream(ExampleStream):
    """Aligned examples from JSON lines (``.jsonl``) or Parquet (``.parquet``) files.

    - Every epoch visits every example once, in an order shuffled with ``seed + epoch``
      (``shuffle=False``: file order). Global batches run across epoch boundaries.
    - ``epochs``: stop after this many epochs (``None``: cycle forever; the loop's
      ``max_steps`` ends the run). The last batch may be short.
    - ``rank`` / ``world_size``: every rank reads the same global sequence and keeps the
      examples at offsets ``rank, rank + world_size, ...`` of each global batch.
    - The position is ``(epoch, offset)`` of the first uncommitted example, identical on all
      ranks; ``state()`` also records the number of examples and a fingerprint of the data,
      and ``load_state`` refuses a position for other data.
    """

    def __init__(self, paths: str | Path | Sequence[str | Path] = (), *, seed: int = 0,
                 shuffle: bool = True, epochs: int | None = None, rank: int = 0,
                 world_size: int = 1, records: Sequence[str] | None = None) -> None:
        if isinstance(paths, (str, Path)):
            paths = [paths]
        self.paths = [str(p) for p in paths]
        raw: list[str] = list(records) if records is not None else []
        for p in self.paths:
            raw.extend(_read_records(Path(p)))
        if not raw:
            raise ValueError(f"no examples in {self.paths or 'the given records'}")
        self._records = raw
        self.seed, self.shuffle, self.epochs = seed, shuffle, epochs
        self.rank, self.world_size = rank, world_size
        self._fingerprint = hashlib.sha256(
            "\n".join(r.strip() for r in raw).encode()).hexdigest()[:16]
        self._order_epoch = -1
        self._order: list[int] = []
        self._committed = (0, 0)  # (epoch, offset) of the first uncommitted example
        self._read = (0, 0)       # next position next_batch serves
        self._issued: deque[tuple[set[str], tuple[int, int]]] = deque()

    @classmethod
    def from_examples(cls, examples: Sequence[AlignedExample], **kwargs: Any) -> FileStream:
        """An in-memory stream with the same behavior (tests, notebooks)."""
        return cls((), records=[e.model_dump_json() for e in examples], **kwargs)

    def __len__(self) -> int:
        return len(self._records)

    def _index(self, epoch: int, offset: int) -> int:
        if epoch != self._order_epoch:
            order = list(range(len(self._records)))
            if self.shuffle:
                random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._order, self._order_epoch = order, epoch
        return self._order[offset]

    def _exhausted(self, position: tuple[int, int]) -> bool:
        return self.epochs is not None and position[0] >= self.epochs

    def next_batch(self, n: int) -> list[tuple[str, AlignedExample]]:
        epoch, offset = self._read
        out: list[tuple[str, AlignedExample]] = []
        for i in range(n):
            if self._exhausted((epoch, offset)):
                break
            if i % self.world_size == self.rank:
                record = self._records[self._index(epoch, offset)]
                out.append((f"{epoch}:{offset}", AlignedExample.model_validate_json(record)))
            offset += 1
            if offset == len(self._records):
                epoch, offset = epoch + 1, 0
        self._read = (epoch, offset)
        self._issued.append(({k for k, _ in out}, self._read))
        return out

    def commit(self, keys: Sequence[str]) -> None:
        done = set(keys)
        while self._issued:
            pending, end = self._issued[0]
            pending -= done
            if pending:
                break
            self._committed = end
            self._issued.popleft()

    def state(self) -> dict[str, Any]:
        return {"kind": "file", "epoch": self._committed[0], "offset": self._committed[1],
                "seed": self.seed, "shuffle": self.shuffle, "num_examples": len(self._records),
                "fingerprint": self._fingerprint}

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "file":
            raise ValueError(f"not a file stream position: {state}")
        if (state.get("num_examples"), state.get("fingerprint")) != (
                len(self._records), self._fingerprint):
            raise ValueError("the saved data position is for other data "
                             f"({state.get('num_examples')} examples, fingerprint "
                             f"{state.get('fingerprint')}); this stream has "
                             f"{len(self._records)} examples, fingerprint {self._fingerprint}")
        if (state.get("seed"), state.get("shuffle")) != (self.seed, self.shuffle):
            raise ValueError("the saved data position used another seed or shuffle setting")
        self._committed = self._read = (int(state["epoch"]), int(state["offset"]))
        self._issued.clear()
