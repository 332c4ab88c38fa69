"""Jobs first: under a burst of new resources, the passes that may create a Job go before everything else.

One operator process serves every resource on one event loop. When hundreds of resources arrive at once,
each creation pass (create the run's ConfigMap and Job) would otherwise share the loop with the status
writes, Events, rechecks and child-event passes of the resources created just before it, and every Job
would wait for all of that work. A creation pass holds a :meth:`Pacing.ticket` until its
children exist; the work that can wait (the status write that follows, rechecks, passes woken by a Job
or Pod) first awaits :meth:`Pacing.turn`, which returns once no creation is pending and none has started
for ``quiet`` seconds, or after ``longest`` seconds in any case, so that nothing waits for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

#: A spell this long without a new creation pass says the burst is over (the creates of a burst reach the
#: operator milliseconds apart).
QUIET = 0.15
#: The longest any deferrable work waits behind creations.
LONGEST = 5.0


class Pacing:
    def __init__(self, quiet: float = QUIET, longest: float = LONGEST, clock: Callable[[], float] = time.monotonic):
        self.quiet, self.longest, self.clock = quiet, longest, clock
        self.pending = 0
        self._last = float("-inf")
        self._open: asyncio.Event | None = None
        self._timer: asyncio.TimerHandle | None = None

    def _event(self) -> asyncio.Event:
        if self._open is None:  # made on first use, inside the running loop
            self._open = asyncio.Event()
            self._open.set()
        return self._open

    def begin(self) -> None:
        """A creation pass starts: deferrable work waits from now on."""
        self.pending += 1
        self._last = self.clock()
        self._event().clear()

    def end(self) -> None:
        """A creation pass has made its children (or given up)."""
        self.pending = max(0, self.pending - 1)
        self._last = self.clock()
        if self.pending == 0:
            self._arm(self.quiet)

    def ticket(self) -> Ticket:
        """A creation pass's hold on deferrable work, given back once (:meth:`Ticket.done`)."""
        self.begin()
        return Ticket(self)

    def _arm(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay, self._maybe_open)

    def _maybe_open(self) -> None:
        self._timer = None
        if self.pending:
            return  # the last end() arms the timer again
        left = self.quiet - (self.clock() - self._last)
        if left > 0:
            self._arm(left)
        else:
            self._event().set()

    async def turn(self) -> float:
        """Wait until no creation is pending (at most ``longest`` seconds); the seconds waited."""
        event = self._event()
        if event.is_set():
            return 0.0
        started = self.clock()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), self.longest)
        return self.clock() - started


class Ticket:
    """One creation pass's hold: :meth:`done` (idempotent) when its children exist or it gives up."""

    def __init__(self, pacing: Pacing) -> None:
        self._pacing: Pacing | None = pacing

    def done(self) -> None:
        pacing, self._pacing = self._pacing, None
        if pacing is not None:
            pacing.end()
