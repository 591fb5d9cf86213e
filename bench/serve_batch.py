"""`serve`'s micro-batcher: requests queued by the connection threads, answered in batches by worker
threads that each own an instance of the system (systems are not thread-safe), in two lanes so that
long prompts do not hold short ones."""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any

from bench.serve_api import ApiError
from bench.types import System

RETRY_AFTER_S = 1  # what a 429 tells the client to wait (the queue drains a batch at a time)


class Batcher:
    """Worker threads answer queued requests in batches of up to `max_batch`.

    Two lanes: a request whose prompt is over `long_tokens` waits in the long lane and is answered
    alone (never padding a batch of short ones to its length). With `long_system` (a second instance
    of the system, built the same way: one more copy of its weights in memory) the long lane has a
    worker of its own, so short requests are answered while a long one decodes (torch releases the
    GIL, so both progress; long prompts are decoded one at a time). Without it one worker answers
    both lanes, a long request only when no short one waits: short requests overtake queued long
    ones, but one already decoding is not interrupted (the system is not preemptible) and holds
    every request behind it for its whole decode, which `Limits.max_prompt_tokens` bounds."""

    def __init__(self, system: System, max_batch: int = 8, wait_s: float = 0.01, max_queue: int = 64,
                 long_tokens: int | None = None, long_system: System | None = None):
        self.system, self.max_batch, self.wait_s = system, max(1, max_batch), max(0.0, wait_s)
        self.max_queue, self.long_tokens = max_queue, long_tokens
        self.long_system = long_system if long_tokens is not None else None
        self._short: deque = deque()
        self._long: deque = deque()
        self._arriving = 0  # requests admitted and being read or parsed: they will be queued in a moment
        self._closed = False
        self._cond = threading.Condition()
        self.batches: list[int] = []  # size of every batch answered (for tests and benchmarks)
        self._workers = [threading.Thread(target=self._loop, args=(system, self._next), name="serve-batcher",
                                          daemon=True)]
        if self.long_system is not None:
            self._workers.append(threading.Thread(target=self._loop, args=(self.long_system, self._next_long),
                                                  name="serve-long-lane", daemon=True))
        for w in self._workers:
            w.start()

    def admit(self) -> None:
        """Count one request in before its body is read, or refuse it (429): the queue and the requests
        being read together never pass `max_queue`, which bounds the memory of bodies in flight."""
        with self._cond:
            if self._arriving + len(self._short) + len(self._long) >= self.max_queue:
                raise ApiError(429, f"the server's queue is full; retry after {RETRY_AFTER_S} s", code="queue_full",
                               headers={"Retry-After": str(RETRY_AFTER_S)})
            self._arriving += 1

    def leave(self) -> None:
        """An admitted request that will not be queued (refused, or its client left)."""
        with self._cond:
            self._arriving -= 1
            self._cond.notify_all()

    def submit(self, request: Any, tokens: int = 0) -> Future:
        """Queue an admitted request; its answer (a Generation) or the system's error comes in the future."""
        fut: Future = Future()
        with self._cond:
            long = self.long_tokens is not None and tokens > self.long_tokens
            (self._long if long else self._short).append((request, fut))
            self._arriving -= 1
            self._cond.notify_all()
        return fut

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for w in self._workers:
            w.join(timeout=60)

    def _next_long(self) -> list | None:
        """The long lane's next request, for its own worker."""
        with self._cond:
            while not (self._long or self._closed):
                self._cond.wait()
            return [self._long.popleft()] if self._long else None  # (closed)

    def _next(self) -> list | None:
        """The next batch of short requests; or, where the long lane has no worker of its own, its next
        request when no short one waits."""
        shared = self.long_system is None
        with self._cond:
            while not (self._short or (shared and self._long) or self._closed):
                self._cond.wait()
            if not self._short:
                return [self._long.popleft()] if shared and self._long else None  # (closed)
            batch, deadline = [self._short.popleft()], time.monotonic() + self.wait_s
            while len(batch) < self.max_batch and not self._closed:
                if self._short:
                    batch.append(self._short.popleft())
                    continue
                left = deadline - time.monotonic()
                # past the window, wait only for requests already being read, and not for ever (a client
                # that stalls mid-body must not hold the batch)
                if left <= 0 and (self._arriving == 0 or -left > 0.1 + 10 * self.wait_s):
                    break
                self._cond.wait(timeout=max(left, 0.002))
            return batch

    def _loop(self, system: System, next_batch) -> None:
        while (batch := next_batch()) is not None:
            self.batches.append(len(batch))
            requests = [r for r, _ in batch]
            try:
                gens = system.generate_batch(requests)
                if len(gens) != len(requests):
                    raise RuntimeError(f"{system.name} returned {len(gens)} outputs for {len(requests)} requests")
                for (_, fut), g in zip(batch, gens):
                    fut.set_result(g)
            except Exception as e:
                if len(batch) == 1:
                    batch[0][1].set_exception(e)
                    continue
                for r, fut in batch:  # one by one, so that a bad request fails alone
                    try:
                        fut.set_result(system.generate_batch([r])[0])
                    except Exception as e1:
                        fut.set_exception(e1)
