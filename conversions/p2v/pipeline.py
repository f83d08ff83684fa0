"""The volume writes of a P2V stream, done in a thread of their own, in order.

Writing a region into a fresh volume file takes about as long as receiving it over SSH
(measured on the lab machine: 2.3 ms per MiB, the kernel allocating the file's blocks);
done in the same thread, the two added up, and the copy ran at 0.75 of a bare
``ssh … dd | dd`` pipe, whose two processes overlap them. Here the stream's thread only
receives and checks while this one writes, with at most DEPTH steps waiting between them.

A volume this machine holds as a file takes the region bytes straight from the SSH pipe
instead (splice, storage.volume_io.FileUpload): no copy passes through this process, and
its steps run in the stream's own thread (InlineSteps), in the order the bytes arrive.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from types import TracebackType

DEPTH = 8  # steps of up to one region (1 MiB) each

Step = Callable[[], None]


class WritePipeline:
    """Runs the steps given with `put` one after the other in a thread. A step that fails
    stops the rest; its error is raised by the next `put` or by `drain`."""

    def __init__(self, name: str, depth: int = DEPTH) -> None:
        self._steps: queue.Queue[Step | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (step := self._steps.get()) is not None:
            if self._error is None and not self._stopped:
                try:
                    step()
                except BaseException as exc:  # handed to the stream's thread
                    self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            self._stopped = True  # nothing after a failed step runs, also once it is raised
            error, self._error = self._error, None
            raise error

    def put(self, step: Step) -> None:
        self._raise()
        self._steps.put(step)

    def drain(self) -> None:
        """Wait until every step given has run; raise the error of one that failed."""
        self._finish()
        self._raise()

    def abort(self) -> None:
        """Skip the steps still waiting and wait for the one running."""
        self._stopped = True
        self._finish()

    def _finish(self) -> None:
        if self._thread.is_alive():
            self._steps.put(None)
            self._thread.join()

    def __enter__(self) -> WritePipeline:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.abort()


class InlineSteps:
    """WritePipeline's interface, running each step at once in the caller's thread."""

    def put(self, step: Step) -> None:
        step()

    def drain(self) -> None:
        pass

    def abort(self) -> None:
        pass
