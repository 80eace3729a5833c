"""The Faust worker our services run: Faust's own, with a bounded shutdown.

mode gives each service up to 60 s to stop, and an aiokafka client whose broker is gone waits for
it that long (measured: the normaliser still running 60 s after SIGTERM with the broker stopped).
An orchestrator (``wapipe up``, compose, Kubernetes) expects a service to be gone within 10 s of
SIGTERM, so the stop a signal starts is given ``shutdown_deadline_s``, then the process exits
(``wapipe.procs.exit_by``): what was not committed is read again after the restart.
"""

from __future__ import annotations

from faust.worker import Worker as FaustWorker

from wapipe.procs import exit_by


class Worker(FaustWorker):
    shutdown_deadline_s: float = 8.0

    async def stop(self) -> None:
        if not getattr(self, "_exit_deadline", None):
            self._exit_deadline = exit_by(self.shutdown_deadline_s, f"{self.app.conf.id} did not stop in time")
        await super().stop()
