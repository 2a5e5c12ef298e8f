"""Report files: one document (the JSON schema), rendered by the path's extension as
``.json``, ``.md`` or ``.html``; the Markdown also goes to GitHub's job summary on request."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from .document import SCHEMA_VERSION, Document, ReportContext, build_document

__all__ = [
    "RENDERERS",
    "SCHEMA_VERSION",
    "Document",
    "ReportContext",
    "append_step_summary",
    "build_document",
    "render",
    "write_report",
    "write_reports",
]


_SURROGATE = re.compile("[\ud800-\udfff]")


def render_json(doc: Document) -> str:
    """The document as JSON, every text exactly (a lone surrogate in a test id, which no
    UTF-8 file can hold, as its JSON escape ``\\udc80``)."""
    rendered = json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    # JSON puts text only inside strings, so a surrogate is always in one: escaped in place
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", rendered)


def render_markdown(doc: Document) -> str:
    # The Markdown and HTML renderers load when a run writes that file, not on every run.
    from .markdown import render_markdown as render_md

    return render_md(doc)


def render_html(doc: Document) -> str:
    from .html_page import render_html as render_page

    return render_page(doc)


RENDERERS: dict[str, Callable[[Document], str]] = {
    ".json": render_json,
    ".md": render_markdown,
    ".html": render_html,
}


def render(path: Path, doc: Document) -> str:
    """The document as the file ``path`` wants it (by extension, as validated in settings)."""
    return RENDERERS[path.suffix.lower()](doc)


def write_report(path: Path, doc: Document) -> None:
    """Write one report file atomically (a reader never sees half a file)."""
    content = render(path, doc)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(content, encoding="utf-8")
    tmp.replace(path)


def append_step_summary(path: Path, doc: Document) -> None:
    """Append the Markdown report to GitHub's job summary file (other steps write there too)."""
    with path.open("a", encoding="utf-8") as fh:
        fh.write(render_markdown(doc) + "\n")


def write_reports(
    doc: Document,
    paths: Sequence[Path],
    step_summary: Path | None,
    on_error: Callable[[str], None],
) -> None:
    """Every requested report; a file that cannot be written is reported, never raised."""
    for path in paths:
        try:
            write_report(path, doc)
        except (OSError, ValueError) as exc:  # ValueError: a non-finite number in the data
            on_error(f"cannot write the qlearn report {path}: {exc}")
    if step_summary is not None:
        try:
            append_step_summary(step_summary, doc)
        except (OSError, ValueError) as exc:
            on_error(f"cannot append the qlearn report to {step_summary}: {exc}")
