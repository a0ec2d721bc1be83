"""Rows out: a sink that buffers COPY text per table and a loader thread that streams it into PostgreSQL."""

import queue
import threading
from collections.abc import Callable
from typing import Any

from crm.demo.world import COLUMNS, NULL, copy_from_stdin


class _Loader(threading.Thread):
    """Runs the COPY statements on the seed's connection while the main thread generates the next rows."""

    def __init__(self, raw_connection: Any) -> None:
        super().__init__(name="seed-demo-loader", daemon=True)
        self._connection = raw_connection
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue(maxsize=8)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self._connection.cursor() as cursor:
                while (item := self._queue.get()) is not None:
                    table, data = item
                    with cursor.copy(copy_from_stdin(table, COLUMNS[table])) as copy:
                        copy.write(data)
        except Exception as exc:  # handed over to the main thread, which raises it
            self.error = exc
            while self._queue.get() is not None:
                pass  # the transaction is aborted: drain, so that the producer never blocks

    def put(self, table: str, data: str) -> None:
        self.raise_error()
        self._queue.put((table, data))

    def stop(self) -> None:
        """Wait for the queued chunks; the connection is the main thread's again afterwards."""
        if self.is_alive():
            self._queue.put(None)
            self.join()

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


class Sink:
    """Buffers COPY lines per table and hands full chunks to the loader (without one it only counts)."""

    CHUNK = 20_000

    def __init__(self, loader: _Loader | None = None) -> None:
        self._loader = loader
        self._buffers: dict[str, list[str]] = {table: [] for table in COLUMNS}
        self.counts = dict.fromkeys(COLUMNS, 0)

    def adder(self, table: str) -> Callable[[str], None]:
        """A fast ``add(line)`` for one table."""
        buffer = self._buffers[table]
        append = buffer.append
        chunk = self.CHUNK

        def add(line: str) -> None:
            append(line)
            if len(buffer) >= chunk:
                self._flush(table)

        return add

    def _flush(self, table: str) -> None:
        lines = self._buffers[table]
        if lines:
            self.counts[table] += len(lines)
            if self._loader is not None:
                self._loader.put(table, "".join(lines))
            lines.clear()

    def flush(self) -> None:
        for table in COLUMNS:
            self._flush(table)


def _n(value: object) -> str:
    return NULL if value is None else str(value)


def _ts(ts: Callable[[int], str], t: int | None) -> str:
    return NULL if t is None else ts(t)
