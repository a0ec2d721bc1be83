"""What the benchmarks print about the machine, so figures from different runs can be compared."""

import time


def cpu_check() -> float:
    """Seconds for ten million additions in this Python: the machine's speed at the time of the run
    (this shared VM's has varied by 1.9× between sessions), to read the other figures against."""
    started, total = time.perf_counter(), 0
    for i in range(10_000_000):
        total += i
    return time.perf_counter() - started
