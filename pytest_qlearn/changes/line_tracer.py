"""Per-test line coverage with coverage.py: a private ``Coverage`` object limited to the
project's own files, started around each test chosen for tracing and stopped after it, with
the test id as coverage.py's dynamic context (the C tracer core: it records contexts).

Private on purpose: it writes no data file and never touches a ``.coveragerc``, so a
project's own coverage configuration and reports are left alone. coverage.py is imported
when a tracer or an analysis is made, not with this module: a run that traces nothing (another
tool measures, or a debugger traces) does not load it.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .digests import relative_key

if TYPE_CHECKING:
    import coverage

#: Never measured even under the project root: installed packages, tool caches.
OMIT = ("*/site-packages/*", "*/dist-packages/*", "*/.tox/*", "*/.nox/*", "*/.venv/*")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """coverage.py warns through ``warnings`` (e.g. "No data was collected" after tests that
    ran no project code); a suite with ``filterwarnings = error`` must never see those of a
    tracer it did not ask for."""
    from coverage.exceptions import CoverageWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CoverageWarning)
        yield


def other_tracer() -> str | None:
    """What else traces this process (a debugger, another coverage tool), or None: two
    tracers cannot share ``sys.settrace``, and the user's tool wins."""
    tracer = sys.gettrace()
    if tracer is None:
        return None
    owner = getattr(tracer, "__module__", None) or type(tracer).__module__
    return f"{owner} is tracing this process"


class LineTracer:
    def __init__(self, root: Path) -> None:
        import coverage

        self.root = root
        self.cov: coverage.Coverage = coverage.Coverage(
            data_file=None,  # in memory only
            source=[str(root)],
            omit=list(OMIT),
            config_file=False,
        )
        # the default core of newer Pythons (sys.monitoring) records no contexts; an older
        # coverage.py has no such option, and ctrace is its default anyway
        with contextlib.suppress(coverage.CoverageException):
            self.cov.set_option("run:core", "ctrace")
        self.tracing: str | None = None
        self.pending: list[str] = []  # traced tests whose lines were not taken yet
        self._context: str | None = None  # coverage.py's dynamic context now

    def start(self, test_id: str) -> None:
        """Trace ``test_id`` (again: its phases are traced one by one). The context switches
        at a test's first phase only: each switch writes the lines collected so far to
        coverage.py's data, and a test's later phases add to its own."""
        with _quiet():
            self.cov.start()
            if self._context != test_id:
                self.cov.switch_context(test_id)
                self._context = test_id
        self.tracing = test_id

    def stop(self) -> None:
        """Stop tracing; the test's lines wait in coverage.py's data until :meth:`take`. A
        test is traced in phases (setup, call, teardown): it is pending once."""
        test_id, self.tracing = self.tracing, None
        with _quiet():
            self.cov.stop()
        if test_id is not None and (not self.pending or self.pending[-1] != test_id):
            self.pending.append(test_id)

    def take(self) -> dict[str, dict[str, list[int]]]:
        """The lines of every test traced since the last call (test id → file relative to
        the root → lines), then the data is erased. Reading costs about 10 ms for a few
        tests (coverage.py also looks for source files never run), so tests are read in
        large batches, not one by one."""
        if not self.pending:
            return {}
        wanted = set(self.pending)
        self.pending.clear()
        per_test: dict[str, dict[str, list[int]]] = {}
        with _quiet():
            data = self.cov.get_data()
            for path in data.measured_files():
                relative = relative_key(Path(path), self.root)
                for line, contexts in data.contexts_by_lineno(path).items():
                    for context in contexts:
                        if context in wanted:
                            per_test.setdefault(context, {}).setdefault(relative, []).append(line)
            # the data only: coverage.py's whole erase drops its collector too, and setting
            # one up again at the next start records the caller's stack (inspect.stack(), tens
            # of ms under pytest's deep hooks) and forgets which files it traces
            data.erase()
        self._context = None  # the next test's start names its context again
        return per_test

    def close(self) -> None:
        if self.tracing is not None:
            self.tracing = None
            with _quiet():
                self.cov.stop()


def statements(root: Path, paths: Iterable[str]) -> dict[str, set[int]]:
    """The executable lines of each file (relative to ``root``), as coverage.py counts them;
    files it cannot analyse (gone, not Python) are left out."""
    import coverage

    analyser = coverage.Coverage(data_file=None, config_file=False)
    result: dict[str, set[int]] = {}
    with _quiet():
        for path in paths:
            try:
                _, lines, _, _, _ = analyser.analysis2(str(root / path))
            except Exception:  # coverage.py raises several kinds for unanalysable files
                continue
            result[path] = set(lines)
    return result
