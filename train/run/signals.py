"""Ctrl-C and SIGTERM stop a run at a clean point instead of wherever they land.

    with signals.StopRequest() as stop:
        for step in ...:
            ...
            if stop.requested: break          # finish nothing half-way
    exit_status = stop.exit_status            # 130 after Ctrl-C, 143 after SIGTERM

The first SIGINT (Ctrl-C) or SIGTERM (`kill`, a cluster scheduler, a
shutdown) only records the request; the training loop stops after the step
it is in and the run stays resumable from its last finished epoch. A second
Ctrl-C raises KeyboardInterrupt at once, for a user who really wants out.
"""

import signal
import threading

EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal's number


class StopRequest:
    """Records SIGINT/SIGTERM while active; restores the previous handlers on exit."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    @property
    def requested(self):
        return self.signal is not None

    @property
    def exit_status(self):
        return EXIT_STATUS.get(self.signal, 130)

    def interrupt(self, signum=signal.SIGINT):
        """Records a stop request as if `signum` had arrived (also for KeyboardInterrupt)."""
        if self.signal is None:
            self.signal = signum

    def __enter__(self):
        # Handlers can only be installed from the main thread; elsewhere the
        # default behaviour (KeyboardInterrupt, termination) stays.
        if threading.current_thread() is threading.main_thread():
            for signum in EXIT_STATUS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
        return False

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.interrupt(signum)
