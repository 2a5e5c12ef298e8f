"""Carrying a coverage map across an edit instead of tracing the test again.

A test that executed none of the changed lines of a file executes, after the edit, the same
statements at line numbers moved by the lines inserted and removed above them. So its map is
re-numbered, not re-traced: ``git diff -U0`` (or :func:`hunks_from_texts`, difflib, where git
is not there) gives the hunks, :class:`FileShift` says which old lines a test must not have
executed and where every other old line went.

Code that runs at import — module-level and class-level statements, ``def`` and decorator
lines, default arguments — runs outside every test's trace, so no map shows who depends on
it. A change there cannot be carried: :func:`analyse` returns None and the tests covering the
file are traced again, as before. Pure: no git, no pytest, no coverage.py.
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from typing import NamedTuple


class Hunk(NamedTuple):
    """One hunk of a ``-U0`` diff, numbered as git numbers them: ``old_start`` is the first
    old line changed, or for a pure insertion (``old_count`` 0) the line it follows; the same
    for ``new_start``."""

    old_start: int
    old_count: int
    new_start: int
    new_count: int


_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def parse_hunks(diff: str) -> dict[str, list[Hunk]]:
    """The hunks of each file of a ``git diff -U0 --no-prefix``-less (``a/``, ``b/``) diff,
    keyed by the old name. A file new since the old version (``/dev/null``) had no lines and
    is absent; so is an unusual (quoted) name, which is then left to the file level."""
    result: dict[str, list[Hunk]] = {}
    current: list[Hunk] | None = None
    for line in diff.splitlines():
        if line.startswith("--- "):
            old = line[4:].rstrip("\t")  # git ends a name holding a space with a tab
            unusable = old == "/dev/null" or old.startswith('"')
            current = None if unusable else result.setdefault(old.removeprefix("a/"), [])
        elif line.startswith("@@") and current is not None:
            match = _HUNK.match(line)
            if match is None:
                continue
            old_start, old_count, new_start, new_count = match.groups()
            current.append(
                Hunk(
                    int(old_start),
                    int(old_count or "1"),
                    int(new_start),
                    int(new_count or "1"),
                )
            )
    return result


def hunks_from_texts(old: str, new: str) -> list[Hunk]:
    """The hunks between two versions of a file (difflib, numbered like git's ``-U0``)."""
    matcher = difflib.SequenceMatcher(None, old.splitlines(), new.splitlines(), autojunk=False)
    hunks = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        old_start = i1 + 1 if i2 > i1 else i1
        new_start = j1 + 1 if j2 > j1 else j1
        hunks.append(Hunk(old_start, i2 - i1, new_start, j2 - j1))
    return hunks


def changed_old_lines(hunks: Iterable[Hunk]) -> set[int]:
    """The lines of the old version that were changed or removed, and for a pure insertion
    the two lines around it (the code there changed)."""
    lines: set[int] = set()
    for hunk in hunks:
        if hunk.old_count == 0:
            lines.update((hunk.old_start, hunk.old_start + 1))
        else:
            lines.update(range(hunk.old_start, hunk.old_start + hunk.old_count))
    return lines


def shift_lines(lines: Iterable[int], hunks: Sequence[Hunk]) -> list[int]:
    """Old line numbers (none of them changed or removed) as the new version numbers them."""
    ordered = sorted(hunks)
    result = []
    for line in sorted(lines):
        offset = 0
        for hunk in ordered:
            last_old = hunk.old_start + hunk.old_count - 1 if hunk.old_count else hunk.old_start
            if last_old >= line:
                break
            offset += hunk.new_count - hunk.old_count
        result.append(line + offset)
    return result


class FileShift(NamedTuple):
    """How one file's edit moves the maps of the tests that did not run it: a test that
    executed any of ``touched`` (old numbering) is traced again; every other test's lines
    move by ``hunks``."""

    hunks: tuple[Hunk, ...]
    touched: frozenset[int]

    def carry(self, lines: AbstractSet[int]) -> list[int] | None:
        """``lines`` (old numbering) in the new numbering, or None when they touch the
        change."""
        if not self.touched.isdisjoint(lines):
            return None
        return shift_lines(lines, self.hunks)


def _first_line(node: ast.stmt) -> int:
    decorators: list[ast.expr] = getattr(node, "decorator_list", [])
    return min([node.lineno, *(d.lineno for d in decorators)])


def _end_line(node: ast.stmt) -> int:
    return node.end_lineno if node.end_lineno is not None else node.lineno


def _is_docstring(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


class _Layout(NamedTuple):
    """Where some lines of a version run: those of ``import_time`` run when the module is
    imported (outside every test); ``recorded`` maps a line inside a statement to the lines a
    test running it records (see :func:`_layout`)."""

    import_time: set[int]
    recorded: dict[int, range]


def _children(node: ast.stmt) -> Iterator[ast.stmt]:
    """The statements directly inside ``node`` (not walking expressions: faster)."""
    for name in ("body", "orelse", "finalbody"):
        yield from (c for c in getattr(node, name, None) or () if isinstance(c, ast.stmt))
    for handler in getattr(node, "handlers", None) or ():
        yield from handler.body
    for case in getattr(node, "cases", None) or ():
        yield from case.body


def _holding(body: list[ast.stmt], lines: frozenset[int]) -> Iterator[ast.stmt]:
    """Every statement of ``body``, nested ones too, whose lines hold one of ``lines`` (a
    nested statement lies within its parent's lines: the others are not entered)."""
    stack = list(body)
    while stack:
        node = stack.pop()
        first, last = _first_line(node), _end_line(node)
        if any(first <= line <= last for line in lines):
            yield node
            stack.extend(_children(node))


def _layout(text: str, lines: Iterable[int]) -> _Layout | None:
    """The layout of ``lines`` in one version, None when it does not parse. Only the
    statements holding those lines are looked at (a one-line change in a long module costs
    its parse, not a walk of every statement). A line belongs to the innermost statement
    holding it; a test that ran it ran that statement's first lines: all of a simple
    statement, the header of a compound one (``if``/``for``/``with``/``try`` and their
    continuation lines: what comes before the body)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    wanted = frozenset(lines)
    import_time: set[int] = set()
    function_bodies: set[int] = set()

    def within(first: int, last: int) -> list[int]:
        return [line for line in wanted if first <= line <= last]

    def visit(body: list[ast.stmt], *, docstring_allowed: bool) -> None:
        for index, node in enumerate(body):
            first, last = _first_line(node), _end_line(node)
            if not within(first, last):
                continue
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                import_time.update(within(first, _first_line(node.body[0]) - 1))
            elif isinstance(node, ast.ClassDef):
                import_time.update(within(first, _first_line(node.body[0]) - 1))
                visit(node.body, docstring_allowed=True)
            elif not (docstring_allowed and index == 0 and _is_docstring(node)):
                import_time.update(within(first, last))

    visit(tree.body, docstring_allowed=True)
    innermost: dict[int, tuple[int, int, int, int]] = {}
    for node in _holding(tree.body, wanted):
        first, last = _first_line(node), _end_line(node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function_bodies.update(within(_first_line(node.body[0]), last))
        inner = [
            _first_line(child) if isinstance(child, ast.stmt) else child.lineno
            for name in ("body", "orelse", "finalbody", "handlers")
            for child in getattr(node, name, None) or ()
            if isinstance(child, (ast.stmt, ast.excepthandler))
        ]
        inner += [
            child.pattern.lineno for child in getattr(node, "cases", None) or ()
        ]  # match statements
        header_last = max(min(inner) - 1, node.lineno) if inner else last
        span = (last - first, first, last, header_last)
        for line in within(first, last):
            if line not in innermost or span < innermost[line]:
                innermost[line] = span
    recorded = {
        line: range(first, header_last + 1)
        for line, (_, first, _, header_last) in innermost.items()
    }
    return _Layout(import_time - function_bodies, recorded)


def analyse(old: str, new: str, hunks: Sequence[Hunk]) -> FileShift | None:
    """How the edit from ``old`` to ``new`` (its ``hunks``) moves maps, or None when it
    cannot be carried: a version does not parse, or a changed line runs at import."""
    if not hunks:
        return FileShift((), frozenset())
    removed_or_near = set(changed_old_lines(hunks))
    new_lines: set[int] = set()
    for hunk in hunks:
        new_lines.update(range(hunk.new_start, hunk.new_start + hunk.new_count))
    before = _layout(old, removed_or_near)
    if before is None:
        return None
    after = _layout(new, new_lines)
    if after is None:
        return None
    touched: set[int] = set()
    for hunk in hunks:
        removed = range(hunk.old_start, hunk.old_start + hunk.old_count)
        added = range(hunk.new_start, hunk.new_start + hunk.new_count)
        if any(line in before.import_time for line in removed) or any(
            line in after.import_time for line in added
        ):
            return None
        for line in changed_old_lines([hunk]):
            touched.add(line)
            touched.update(before.recorded.get(line, ()))
    return FileShift(tuple(sorted(hunks)), frozenset(touched))
