"""pytest-qlearn: a pytest plugin that learns the test order across CI runs.

PYTEST_DONT_REWRITE: pytest rewrites the asserts of every module of a pytest11 plugin's
distribution; this package's modules load as plain modules (see below).
"""

from __future__ import annotations

import sys

__version__ = "0.1.0"


def _load_unrewritten() -> None:
    """Unmark this package for pytest's assertion rewriting, which it gets for being a
    ``pytest11`` plugin: rewriting parses and compiles every module from source and caches
    the result only where byte code may be written — with ``PYTHONDONTWRITEBYTECODE`` (set
    in many CI images) every run paid ≈ 0.3 s of CPU to import the plugin, against the
    installed ``.pyc`` files. The plugin's asserts are internal checks, for which rewriting
    adds nothing. Only this ``__init__`` still goes through the hook (it is what imports
    first). Private pytest state, so any surprise leaves rewriting as it was."""
    for finder in sys.meta_path:
        if type(finder).__name__ != "AssertionRewritingHook":
            continue
        try:
            marked = finder._must_rewrite  # type: ignore[attr-defined]
            cache = finder._marked_for_rewrite_cache  # type: ignore[attr-defined]
            if __name__ in marked:
                marked.discard(__name__)
                cache.clear()
        except Exception:  # another pytest: rewriting stays on
            pass


_load_unrewritten()
