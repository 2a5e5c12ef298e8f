"""Change detection: what changed since the last episode, and which tests it reaches.

``git`` (the working tree's changed lines), ``digests`` (content digests of files),
``impact`` (the static import and call graph), ``awareness`` (the default change awareness
built on it), ``coverage_map`` / ``line_tracer`` / ``coverage`` (per-test coverage under
``--qlearn-cov``). Pure Python, no pytest: every pytest-xdist worker computes the same answer.
"""
