"""Child-process work that runs beside the in-process tests.

Some tests only check what long child processes print or write: a multi-worker cluster,
a job killed and resumed, a benchmark's smoke run. The in-process tests keep about one of
a 2-core machine's cores busy (tracing is single-threaded Python), so such work can run on
the other core meanwhile.

A test module registers its child-process work at import time with `register(name, fn)`
and marks the tests that read it with `@pytest.mark.background(name)`; they read it with
`result(name)`. When collection ends, conftest moves the marked tests to the end of the
run and starts their jobs, one at a time and in that order, on a thread of the pytest
process. `result` waits for a running job, runs a job that has not started in the
caller, and re-raises the job's exception in each test that reads it. A job's `fn` must
therefore make its own temporary directory (pytest's fixtures are not available in the
thread) and give its child processes their own timeouts.
"""

import shutil
import tempfile
import threading
import time

_JOBS = {}
_lock = threading.Lock()
_QUEUE = {"done": None, "first_reader": None}


class _Job:
    def __init__(self, name, fn):
        self.name = name
        self.fn = fn
        self.claimed = False
        self.done = threading.Event()
        self.value = None
        self.error = None
        self.started = self.finished = None
        self.waited = 0.0

    def claim(self):
        with _lock:
            if self.claimed:
                return False
            self.claimed = True
            return True

    def run(self):
        self.started = time.monotonic()
        try:
            self.value = self.fn()
        except BaseException as e:  # noqa: BLE001 (re-raised in every reader)
            self.error = e
        finally:
            self.finished = time.monotonic()
            self.done.set()


def register(name, fn):
    """Registers `fn()` (no arguments) as the job `name`; returns `name`."""
    if name in _JOBS:
        raise ValueError(f"background job {name!r} is registered twice")
    _JOBS[name] = _Job(name, fn)
    return name


def reader_starts():
    """Called as the first test that reads a job starts."""
    if _QUEUE["first_reader"] is None:
        _QUEUE["first_reader"] = time.monotonic()


def result(name):
    """The value `fn()` returned for job `name`, running it here if it has not started."""
    job = _JOBS[name]
    if job.claim():
        job.run()
    start = time.monotonic()
    job.done.wait()
    job.waited += time.monotonic() - start
    if job.error is not None:
        raise job.error
    return job.value


def start(names):
    """Runs the jobs `names` one after another on a daemon thread."""
    jobs = [_JOBS[n] for n in names if n in _JOBS]

    def worker():
        for job in jobs:
            if job.claim():
                job.run()
        _QUEUE["done"] = time.monotonic()

    if jobs:
        threading.Thread(target=worker, name="background-tests", daemon=True).start()


def report():
    """One line per job that ran: its run time and how long its readers waited for it."""
    lines = []
    done, reader = _QUEUE["done"], _QUEUE["first_reader"]
    if done is not None and reader is not None:
        lines.append(f"the queue ended {reader - done:.1f} s before the first reader started "
                     "(negative: after)")
    for job in _JOBS.values():
        if job.started is not None and job.finished is not None:
            lines.append(f"{job.name}: ran {job.finished - job.started:.1f} s, readers "
                         f"waited {job.waited:.1f} s")
    return lines


def temp_dir(prefix):
    """A temporary directory removed when the process exits."""
    import atexit

    path = tempfile.mkdtemp(prefix=f"tfs_{prefix}_")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
