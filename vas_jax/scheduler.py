"""Continuous batching: one thread owns the step engine and serves requests as they arrive.

Requests wait in a bounded queue and take a slot as soon as one is free; their tokens go to each
request's listener as the engine makes them. A request leaves at an end token, at its
max_new_tokens, or when its caller cancels it (a stop string matched, a client left): its slot is
free again by the next step. Nothing here knows about HTTP or text; `vas_jax.server` does.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import threading
import time
from typing import Callable, Sequence

from .engine import Engine
from .errors import VasError
from .params import SamplingParams


class QueueFull(VasError):
    """Every slot is busy and the waiting line is full: try again later."""


class ShuttingDown(VasError):
    """The scheduler takes no new requests."""


@dataclasses.dataclass(frozen=True)
class Event:
    """A token, or the end (finish set, token None). A request's listener gets a list of them per
    engine step (several tokens when the engine decodes several per step)."""

    token: int | None = None
    logprob: float = 0.0
    top_logprobs: tuple = ()
    finish: str | None = None  # "stop" (an end token), "length", "cancelled", "abort" (shutdown) or "error"
    error: str | None = None


@dataclasses.dataclass
class _Request:
    id: int
    prompt: list[int]
    params: SamplingParams
    listener: Callable[[list[Event]], None]
    slot: int | None = None


class Scheduler:
    """Feeds `engine` from a queue of at most max_queue waiting requests, on a thread of its own."""

    def __init__(self, engine: Engine, *, max_queue: int = 256):
        self.engine = engine
        self.max_queue = max_queue
        self._lock = threading.Condition()
        self._waiting: collections.deque[_Request] = collections.deque()
        self._cancels: set[int] = set()
        self._running: dict[int, _Request] = {}  # slot -> request
        self._ids = itertools.count()
        self._accepting = True
        self._stop = False
        self._deadline: float | None = None  # draining: in-flight requests end by then
        self._thread = threading.Thread(target=self._loop, name="vas-scheduler", daemon=True)
        self.steps = 0
        self.failure: str | None = None

    # ------------------------------------------------------------------ any thread
    def start(self) -> "Scheduler":
        self._thread.start()
        return self

    def submit(self, prompt: Sequence[int], params: SamplingParams, listener: Callable[[list[Event]], None]) -> int:
        """Queue a request; returns its id. Raises VasError (bad request), QueueFull or ShuttingDown."""
        prompt = [int(t) for t in prompt]
        self.engine.check(prompt, params)  # reads only the engine's fixed configuration
        with self._lock:
            if not self._accepting or self.failure:
                raise ShuttingDown("the server is shutting down" if not self.failure else self.failure)
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are waiting already; retry later")
            rid = next(self._ids)
            self._waiting.append(_Request(rid, prompt, params, listener))
            self._lock.notify()
        return rid

    def cancel(self, rid: int) -> None:
        """End a request: its slot is free by the next step. Its listener gets finish="cancelled"."""
        with self._lock:
            self._cancels.add(rid)
            self._lock.notify()

    def load(self) -> dict:
        with self._lock:
            return {"running": len(self._running), "waiting": len(self._waiting), "slots": self.engine.slots}

    def drain(self, timeout: float) -> None:
        """Take no new requests; requests in flight finish, or end with finish="abort" after timeout seconds."""
        with self._lock:
            self._accepting = False
            self._deadline = time.monotonic() + timeout
            self._lock.notify()

    def stop(self, timeout: float = 0.0) -> None:
        """Drain (see `drain`) and end the thread."""
        self.drain(timeout)
        with self._lock:
            self._stop = True
            self._lock.notify()
        if self._thread.is_alive():
            self._thread.join()

    # ------------------------------------------------------------------ the scheduler's thread
    def _loop(self) -> None:
        try:
            while self._turn():
                pass
        except Exception as e:  # a failed step: every request in flight ends with the error, nothing hangs
            self.failure = f"the engine failed: {type(e).__name__}: {e}"
            with self._lock:
                self._accepting = False
                everyone = list(self._running.values()) + list(self._waiting)
                self._running.clear()
                self._waiting.clear()
            for r in everyone:
                r.listener([Event(finish="error", error=self.failure)])
            raise

    def _turn(self) -> bool:
        """One round: apply cancellations, admit waiting requests to free slots, one engine step."""
        eng = self.engine
        with self._lock:
            while not (self._waiting or self._running or self._cancels or self._stop):
                self._lock.wait()
            ended = self._take_cancels()
            if self._deadline is not None and time.monotonic() > self._deadline:
                ended += [(r, "abort") for r in self._waiting] + [(r, "abort") for r in self._running.values()]
                self._waiting.clear()
            while self._waiting and eng.free:
                r = self._waiting.popleft()
                r.slot = eng.submit(r.prompt, r.params)
                self._running[r.slot] = r
            done = self._stop and not self._running and not self._waiting
        for r, why in ended:
            if r.slot is not None and self._running.get(r.slot) is r:
                eng.cancel(r.slot)
                del self._running[r.slot]
            r.listener([Event(finish=why)])
        if done:
            return False
        if not eng.busy():
            return True
        events: dict[int, tuple] = {}  # slot -> (request, its events this step)
        for out in eng.step():
            r = self._running.get(out.slot)
            if r is None:
                continue
            ev = Event(out.token, out.logprob, out.top_logprobs, out.reason if out.finished else None)
            events.setdefault(out.slot, (r, []))[1].append(ev)
            if out.finished:
                del self._running[out.slot]
        for r, evs in events.values():
            r.listener(evs)
        self.steps += 1
        return True

    def _take_cancels(self) -> list:
        """(request, "cancelled") for each cancelled request still waiting or running; under the lock."""
        if not self._cancels:
            return []
        ended = [(r, "cancelled") for r in self._running.values() if r.id in self._cancels]
        keep = collections.deque()
        for r in self._waiting:
            (ended.append((r, "cancelled")) if r.id in self._cancels else keep.append(r))
        self._waiting = keep
        self._cancels.clear()
        return ended
