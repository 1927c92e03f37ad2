"""Draw a run's HTML report in a process forked when the run starts (`--report`, #19).

Why: importing matplotlib and its first text layout cost more than a sub-second `train` or `serve`
run itself (docs/report.md, "What a report costs"). A child forked at CLI start does that while the
parent simulates, on the machine's other core, then waits on a pipe; when the result is ready the
parent hands over its saved JSON text and gets back the page, so the run's wall pays the drawing
only. The page is `html.page` of `json.loads` of the text `tables.as_saved` reads back: the same
bytes as drawing in process (tests compare them).

Safety: the child ignores SIGINT (a Ctrl-C goes to the whole process group; the parent alone
answers it), sends its stdout/stderr to /dev/null, and exits when its pipe closes, so a parent that
ends any way (an error, exit 130, even SIGKILL) leaves no child behind: the parent also kills and
reaps it at exit. Any failure in the child (it died, it raised) makes `render` answer None and the
parent draws in process, where an error shows as it always did. Only a single-threaded process
forks (forking threads can deadlock the child), and only where os.fork exists (not Windows).
`PARASIM_REPORT_WORKER=0` turns it off.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading

ENV = "PARASIM_REPORT_WORKER"
_OK, _FAILED = b"ok\n", b"failed\n"


class _Child:
    def __init__(self, pid: int, job_w: int, page_r: int) -> None:
        self.pid, self.job_w, self.page_r = pid, job_w, page_r


_child: _Child | None = None


def start(command: str = "") -> bool:
    """Fork the drawing process now (at most once per process); False where it cannot or should not.
    `command` (the CLI's first word: train, serve, plan) says which simulator's modules the figures
    will read, imported ahead too."""
    global _child
    if _child is not None:
        return True
    if os.environ.get(ENV, "1") == "0" or not hasattr(os, "fork") or threading.active_count() != 1:
        return False
    job_r, job_w = os.pipe()
    page_r, page_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the CLI
        code = 0
        try:
            os.close(job_w)
            os.close(page_r)
            _serve(job_r, page_w, command)
        except BaseException:  # noqa: BLE001 - a child must not unwind into the parent's code
            code = 1
        finally:
            os._exit(code)
    os.close(job_r)
    os.close(page_w)
    _child = _Child(pid, job_w, page_r)
    atexit.register(stop)
    return True


def render(saved_text: str) -> str | None:
    """The page for `saved_text` (a JSON list of saved results) from the child, or None (no child, or it
    failed: the caller draws in process)."""
    global _child
    child, _child = _child, None
    if child is None:
        return None
    try:
        _write_all(child.job_w, saved_text.encode())
        os.close(child.job_w)
        child.job_w = -1
        reply = _read_all(child.page_r)
    except OSError:  # the child died before reading (a broken pipe)
        reply = b""
    finally:
        _end(child)
    head, _, body = reply.partition(b"\n")
    return body.decode("ascii") if head + b"\n" == _OK else None


def stop() -> None:
    """Kill and reap the child if it is still there (at exit, on any error or Ctrl-C)."""
    global _child
    child, _child = _child, None
    if child is not None:
        _end(child)


def _end(child: _Child) -> None:
    for fd in (child.job_w, child.page_r):
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
    child.job_w = child.page_r = -1
    try:
        os.kill(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(child.pid, 0)
    except ChildProcessError:
        pass


def _serve(job_r: int, page_w: int, command: str) -> None:
    """In the child: get ready to draw, then draw the one job the parent sends (none: just exit)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 1)
    os.dup2(null, 2)
    import json

    from parasim.report.figures import prepare
    from parasim.report.html import page

    prepare(command)
    job = _read_all(job_r)
    if not job:
        return
    try:
        text = _OK + page(json.loads(job)).encode("ascii")
    except Exception:  # noqa: BLE001 - the parent draws again in process and shows the error there
        text = _FAILED
    _write_all(page_w, text)


def _read_all(fd: int) -> bytes:
    parts = []
    while chunk := os.read(fd, 1 << 20):
        parts.append(chunk)
    return b"".join(parts)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
