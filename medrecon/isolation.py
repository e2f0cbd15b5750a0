"""Running a study's first read in a child process, so that a crash stays there.

The readers of study files go through native libraries (HDF5 through h5py, image
codecs); on a corrupt file such a library can take the interpreter down (a segfault, an
``abort()``) where Python could not catch it. ``medrecon run`` therefore opens and checks
each study first in a child process (:func:`in_child`): a child that crashes or hangs
becomes the study's failure, naming the file and the signal, and the run goes on; only a
file that a child opened and checked without harm is opened by the run itself.

Children are forked by an *opening server*: a ``python`` process of the run's own that
imports :data:`PRELOAD` once (started in the background by :func:`warm_up` before the
run loads its prior) and never reads a file itself, so that each child costs a
``fork()`` and the read, not an interpreter start (the overhead is measured in
``tests/test_run_isolation.py``). Unlike multiprocessing's ``spawn`` and ``forkserver``
it does not re-import the caller's ``__main__``, and a daemonic process (a Dask worker)
may use it; the threads of one process take turns (:data:`_LOCK`). The server and its
children ignore SIGINT (the terminal sends it to the whole process group: the run
decides what a Ctrl-C does), and SIGTERM; a child under way is killed when the run is
interrupted or the child runs past :data:`TIMEOUT`, and dies with the server, which
ends with the process that started it (or at :func:`shut_down`).

The child checks what opening a study reads (headers, shapes, attributes, geometry, and
the data a reader loads when it opens: a whole sinogram, ISMRMRD acquisitions); slices of
fastMRI k-space are read later, in the run's own process, by the guarded reader
(:mod:`medrecon.data.h5guard`). A child's standard output and error go
to ``/dev/null``: what a dying library prints, the run's one line about it replaces.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from medrecon.errors import MedreconError

logger = logging.getLogger(__name__)

PRELOAD = ("medrecon.run", "medrecon.studies.ct", "medrecon.studies.mri",
           "medrecon.data.sinogram", "medrecon.data.kspace", "medrecon.operators.ct_geometry",
           "h5py")
"""Modules the opening server imports once, so that children start without imports."""

TIMEOUT = 900.0
"""Seconds a child may take before it is killed and the study fails (a reader that hangs
on a corrupt file); the read of even a large study takes seconds."""


@dataclass(frozen=True)
class ChildResult:
    """What a child reported: ``ok``, else ``message``, the failure in one line naming the
    file (:func:`failure_line`), and ``crashed`` when the child died or hung."""

    ok: bool
    message: str = ""
    crashed: bool = False
    seconds: float = 0.0


def failure_line(exc: BaseException, path: Path | str) -> str:
    """A failure in one line: medrecon's own errors as they are (they name the file and
    field); anything else with the file and the exception's type, which says more than a
    bare library message (``KeyError: 'x'``)."""
    if isinstance(exc, MedreconError):
        return one_line(exc)
    return f"{path}: unexpected {type(exc).__name__}: {one_line(exc)}"


def one_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Server:
    """The opening server: a ``python`` process of its own that imported :data:`PRELOAD`
    and forks a child per request (``(fn, args, path)``, pickled, length-prefixed on its
    standard input); it answers ``("started", pid)``, then ``("ended", exit code, reply)``
    with the child's reply ``(ok, message)`` or ``None`` if it died first."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from medrecon.isolation import serve; serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        self.ready = False
        _send(self.process.stdin, list(sys.path))

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                stream.close()

    def run(self, fn: Callable[..., Any], args: tuple[Any, ...], path: Path,
            timeout: float) -> ChildResult:
        out = self.process.stdout
        if not self.ready:  # its imports do not count against the child's time
            if _receive(out, None) != ("ready",):
                raise OSError("the opening server did not start")
            self.ready = True
        start = time.perf_counter()
        deadline = time.monotonic() + timeout
        _send(self.process.stdin, (fn, args, str(path)))
        started = _receive(out, None)
        pid = started[1]
        try:
            ended = _receive(out, deadline)
        except BaseException:  # a timeout, or an interruption: stop the child first
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            raise
        _, code, reply = ended
        seconds = time.perf_counter() - start
        if code < 0:
            return ChildResult(False, f"{path}: crashed (signal {-code}) while being opened: "
                                      f"{_signal_name(-code)} in the reader, a native library "
                                      "failing on this file", crashed=True, seconds=seconds)
        if reply is None:
            return ChildResult(False, f"{path}: the process opening it exited with status "
                                      f"{code} before reporting", crashed=True,
                               seconds=seconds)
        ok, message = reply
        return ChildResult(ok, message, seconds=seconds)


_SERVER: _Server | None = None
_LOCK = threading.RLock()
"""One request at a time: the threads of one process (a Dask worker's) share the server
and its pipes."""


def warm_up() -> None:
    """Start the opening server (in the background: it imports :data:`PRELOAD`) unless one
    is running."""
    global _SERVER
    with _LOCK:
        if _SERVER is None or not _SERVER.alive():
            _SERVER = _Server()


def shut_down() -> None:
    """Stop the opening server, if any (it also stops when this process ends)."""
    global _SERVER
    with _LOCK:
        if _SERVER is not None:
            _SERVER.close()
            _SERVER = None


atexit.register(shut_down)


def in_child(fn: Callable[..., Any], *args: Any, path: Path,
             timeout: float | None = None) -> ChildResult:
    """Run ``fn(*args)`` (a module-level function: the child gets it by reference) in a
    child process; its exception, death by a signal, non-zero exit or running past
    ``timeout`` seconds (default :data:`TIMEOUT`) is reported as a failure of ``path``.
    An exception in this process while waiting (KeyboardInterrupt from SIGINT or SIGTERM)
    kills the child (and the server, started afresh next time) and propagates."""
    timeout = TIMEOUT if timeout is None else timeout
    with _LOCK:
        return _in_child(fn, args, path, timeout)


def _in_child(fn: Callable[..., Any], args: tuple[Any, ...], path: Path,
              timeout: float) -> ChildResult:
    warm_up()
    server = _SERVER
    if server is None:
        raise OSError("the opening server did not start")
    start = time.perf_counter()
    try:
        return server.run(fn, args, path, timeout)
    except TimeoutError:
        shut_down()
        return ChildResult(False, f"{path}: did not open within {timeout:g} s (the reader "
                                  "hangs on this file?); stopped", crashed=True,
                           seconds=time.perf_counter() - start)
    except (EOFError, OSError, pickle.PickleError) as exc:  # the server itself died
        shut_down()
        return ChildResult(False, f"{path}: the process opening it ended unexpectedly "
                                  f"({type(exc).__name__})", crashed=True,
                           seconds=time.perf_counter() - start)
    except BaseException:
        shut_down()
        raise


# ------------------------------------------------------------------------ the server
def serve() -> None:
    """The opening server's loop (see :class:`_Server`); it ends when its input does."""
    # the run decides what a Ctrl-C or a SIGTERM sent to its process group does (it kills
    # the child under way and this server), and this server ends with the run
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _watch_parent()
    logging.disable(logging.CRITICAL)  # silent: the run's own open reports warnings
    warnings.simplefilter("ignore")
    requests = sys.stdin.buffer
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print must not garble the answers
    sys.path[:] = _receive(requests, None)
    for name in PRELOAD:
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    _send(answers, ("ready",))
    while True:
        try:
            fn, args, path = _receive(requests, None)
        except EOFError:
            return
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            os.close(read)
            os.close(answers.fileno())  # the parent sees the server's end, not the child's
            _die_with_parent()
            quiet = os.open(os.devnull, os.O_WRONLY)  # a dying library's last words: the
            os.dup2(quiet, 2)  # run's one line about the crash says it
            os.dup2(quiet, 1)
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - the study's failure, to the parent
                reply = (False, failure_line(exc, path))
            else:
                reply = (True, "")
            with os.fdopen(write, "wb") as pipe:
                pipe.write(pickle.dumps(reply))
            os._exit(0)
        os.close(write)
        _send(answers, ("started", pid))
        with os.fdopen(read, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(pid, 0)
        try:
            reply = pickle.loads(data) if data else None
        except Exception:  # noqa: BLE001 - a child that died while writing
            reply = None
        _send(answers, ("ended", os.waitstatus_to_exitcode(status), reply))


def _watch_parent() -> None:
    """End the server (and, through :func:`_die_with_parent`, its child) once the run's
    process is gone, whichever of its threads started the server: ``PR_SET_PDEATHSIG``
    follows the thread that forked, so the server polls its parent's pid instead."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="medrecon-parent-watch", daemon=True).start()


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent (the server) dies."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _send(stream: IO[bytes], message: object) -> None:
    data = pickle.dumps(message)
    stream.write(struct.pack("!Q", len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes], deadline: float | None) -> Any:
    size = struct.unpack("!Q", _read(stream, 8, deadline))[0]
    return pickle.loads(_read(stream, size, deadline))


def _read(stream: IO[bytes], size: int, deadline: float | None) -> bytes:
    """``size`` bytes of ``stream`` (unbuffered reads of its descriptor, so that select
    sees what is pending); ``TimeoutError`` past ``deadline``, ``EOFError`` at its end."""
    fd = stream.fileno()
    chunks, left = [], size
    while left:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError
        chunk = os.read(fd, left)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
