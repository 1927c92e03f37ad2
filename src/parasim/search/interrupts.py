"""How Ctrl-C reaches a planner run, so that what it reports cannot depend on when it arrives.

A planner alternates between work in the main process (enumerating, pruning, screening memory,
ranking, explaining) and batches of simulations on the executors. A KeyboardInterrupt raised at an
arbitrary line of the main-process work would lose every plan that had already finished, or leave
the ranking half-built. So, while a guard is installed:

- until the first batch is handed to the executors, Ctrl-C raises KeyboardInterrupt as usual:
  nothing has finished, the CLI says "interrupted before any plan finished";
- while a batch runs (`executing`), it raises too, and the executor keeps what finished
  (`Outcome.interrupted`);
- from then on, while the planner screens, ranks and explains what it has, it is only remembered
  (`hit`): the planner skips the simulations it has not started and returns the complete,
  consistent result of what finished, marked interrupted.

The guard is installed only in the main thread and only over Python's own SIGINT handler: a
process started with SIGINT ignored (`nohup`, a background job) keeps ignoring it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class SigintGuard:
    def __init__(self) -> None:
        self.hit = False  # a Ctrl-C arrived while installed
        self._keep = False  # remember instead of raising

    def _handler(self, signum, frame) -> None:  # noqa: ARG002 - the signal module's signature
        self.hit = True
        if not self._keep:
            raise KeyboardInterrupt

    @contextmanager
    def installed(self) -> Iterator[SigintGuard]:
        usable = (threading.current_thread() is threading.main_thread()
                  and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        old = signal.signal(signal.SIGINT, self._handler) if usable else None
        try:
            yield self
        finally:
            if usable:
                signal.signal(signal.SIGINT, old)

    @contextmanager
    def executing(self) -> Iterator[None]:
        """Around one executor batch: Ctrl-C raises inside (the executor keeps what finished; one
        that escapes it is absorbed here and counted in `hit`) and is remembered afterwards."""
        self._keep = False
        try:
            yield
        except KeyboardInterrupt:
            self.hit = True
        finally:
            self._keep = True
