"""Which tests can reach the code that changed since the last run: a static dependency index.

Change awareness is on by default (DESIGN.md, "What the order must always respect", point 2):
the tests that can reach a change run right after the known failures. pytest-testmon knows
this per test from the code blocks each test executed; this module approximates it without
running anything, from the Python files of the project (``ast``), cheaply enough to run on
every pytest start:

* the **import graph** of the test files, the ``conftest.py`` files above them and the project
  modules they import, transitively (stdlib and site-packages are ignored: they resolve to
  nothing under the root). Importing ``a.b.c`` reaches that module, not everything the parent
  packages' ``__init__`` imports, and ``from pkg import name`` follows ``pkg/__init__.py``'s
  re-export of ``name`` to the submodule that defines it;
* the **definitions** of each file (functions, classes, methods, module-level constants, and
  ``<module>`` for the rest), each with a digest of its AST without positions, so moving code
  or editing comments and blank lines changes nothing, and the identifiers it names.

A test is *direct* (level 2) when its own code changed, or it names a changed definition, a
project function that reaches one through calls (names only, transitively), or a fixture that
does (fixtures are requested by argument name); it is *indirect* (level 1) when its file
imports a changed module or is named after it (``tests/test_foo.py`` ~ ``pkg/foo.py``).

Facts are cached by content digest (sha256) in a JSON file, with a ``(st_mtime_ns, st_size)``
memo per path, so a warm start reads no unchanged file. The facts of each file's previous
version are kept too: they are what a changed file's definitions are compared with. The
cache keeps each file's last :data:`KEPT_VERSIONS` versions with the episode each was first
seen in, so the code as it was in an earlier episode can be compared with today's
(:meth:`DependencyIndex.changes_since`): a test that failed last run and reaches no file
that differs from when it last passed has had what broke it reverted.

Measured with ``time.perf_counter`` in an ad-hoc script (CPython 3.11, Linux, a shared 2-CPU
machine; min of 5-30 runs). A generated project of 301 files (150 modules of ~90 lines, 150
test files with 2,000 tests, a conftest): cold scan 0.63 s (1.0 s under load); warm scan (all
cached, nothing changed) + ``changes`` + ``impacts`` for the 2,000 ids + ``save`` 18 ms
(JSON load 6 ms of it; ~30 ms under load); with one function changed, 70-120 ms. toolz 1.2.0
(29 files reached from its 13 test files, 188 tests): cold 95-150 ms, warm 2.5 ms, one function
changed 22 ms. The cold scan is mostly ``ast.parse`` and one pure-Python walk per file.

Pure (no pytest import): every pytest-xdist worker computes the same answer from the same
checkout. Nothing in the user's project (unparsable files, odd encodings, a corrupt cache)
raises out of this module; wrong arguments from our own code do.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import re
import stat
import time
import warnings
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple, TypeGuard

#: Bump when the cached facts change shape or meaning: older caches are then ignored
#: (version 1, one previous digest per path and no episodes, still loads).
CACHE_VERSION = 2
#: Versions of each file the cache keeps (with their facts), newest first.
KEPT_VERSIONS = 6
#: The pseudo-definition holding a module's remaining top-level statements.
MODULE_BLOCK = "<module>"
#: Directories never scanned: environments and build output hold no project code under test.
EXCLUDED_DIRS = frozenset(
    {
        ".venv",
        "venv",
        "site-packages",
        ".tox",
        ".nox",
        "node_modules",
        "build",
        "dist",
        ".git",
        "__pycache__",
    }
)
#: A file modified this recently (seconds) is not memoised by mtime: a second write within
#: the filesystem's timestamp granularity would go unnoticed ("racy" entries, as in git).
_RACY_SECONDS = 2.0
#: How deep ``from pkg import name`` follows chains of ``__init__`` re-exports.
_MAX_REEXPORT_DEPTH = 8
#: Methods whose code runs for every test of their class (their names count as the test's).
_CLASS_SETUP = frozenset(
    {"setUp", "asyncSetUp", "setUpClass", "setup_method", "setup_class", "setup"}
)
#: Module-level functions whose code runs for the tests of their module.
_MODULE_SETUP = frozenset({"setup_module", "setup_function", "setUpModule", "setup"})
#: Calls whose first (string) argument imports a module.
_IMPORT_CALLS = frozenset({"import_module", "importorskip", "__import__"})
#: Module stems too generic to match test names against.
_UNMATCHABLE_STEMS = frozenset({"", "conftest", "__main__", "__init__", "setup", "tests", "test"})


class Impact(NamedTuple):
    """How a test relates to the changes: ``level`` 2 = direct (its own code changed, or it
    names a changed definition, or a function or fixture that names one), 1 = indirect (its
    file imports a changed module, or is named after it, or it names a function further up
    a chain of callers); ``reason`` says why, for humans. ``calls``: for a level-1 test that
    names a caller further up the chain, how many calls away from the change it is (0
    otherwise): nearer than a mere import, less sure than a direct call. ``proximity``: how
    close the test is to the change inside its level, smaller is closer (see
    :func:`proximity`): the order among the tests of one evidence class."""

    level: int
    reason: str
    calls: int = 0
    proximity: int = 0


#: How specifically a test's name (or its class's) names a change it reaches: not at all;
#: after the name it calls (``test_curry`` calling ``curry``, which reaches ``bind``) or the
#: changed method's class (``SeekableTest`` for ``seekable.__init__``); after the changed
#: definition itself (``test_bind``; ``test_eq`` for ``numeric_range.__eq__``).
UNNAMED, NAMED_CALLER, NAMED_CHANGE = 0, 1, 2


def proximity(calls: int, named: int, file_named: bool) -> int:
    """How close a test is to a change, inside its evidence class: the calls between the
    test and the changed definition first (a test naming the change itself beats one naming
    a caller of it), then how specifically the test is named after what it reaches
    (``named``: :data:`UNNAMED`, :data:`NAMED_CALLER` (or True), :data:`NAMED_CHANGE`), then
    whether its file is named after the changed module. One scale for every finding (a test
    that only imports the change counts as :data:`IMPORT_DISTANCE` calls away), so it also
    says which known failure a change is likeliest to have fixed. On the fault histories
    these three, in this order, lifted toolz's fresh-bug APFD in an offline replay of the
    static classes from 0.926 to 0.946 (calls alone: 0.942)."""
    return calls * 6 + (NAMED_CHANGE - int(named)) * 2 + (0 if file_named else 1)


class ChangeSet(NamedTuple):
    """``files``: changed files (relative POSIX paths). ``definitions``: per changed file the
    qualified names of its changed, added and removed definitions (``f``, ``C``, ``C.m``,
    ``CONST``, ``<module>``); None when unknown (the whole file counts as changed)."""

    files: frozenset[str]
    definitions: Mapping[str, frozenset[str] | None]


# An import as written: (level, module, names). ``level`` 0 is absolute; ``names`` is None
# for ``import module`` and the (name, asname) pairs of ``from module import ...``.
_ImportEntry = tuple[int, str, tuple[tuple[str, str | None], ...] | None]


class _Def(NamedTuple):
    digest: str
    refs: frozenset[str]  # identifiers named in it (argument names included)
    args: frozenset[str]  # a function's own argument names (for fixtures' sake)
    module_refs: tuple[tuple[str, str], ...]  # (module, attr) of ``module.attr`` uses


_NO_DEF = _Def("", frozenset(), frozenset(), ())


def _def_from_raw(raw: list[str]) -> _Def:
    refs: set[str] = set()
    module_refs: list[tuple[str, str]] = []
    for token in raw[1].split():
        module, sep, attr = token.partition(":")
        if sep:
            module_refs.append((module, attr))
        else:
            refs.add(token)
    return _Def(raw[0], frozenset(refs), frozenset(raw[2].split()), tuple(module_refs))


class _Facts:
    """What one file's content says; content-addressed, so nothing in it depends on its path
    (relative imports are kept as written and resolved against the path when used)."""

    __slots__ = (
        "_all_used",
        "_checked",
        "_defs",
        "_ok",
        "_raw_defs",
        "aliases",
        "all_names",
        "autouse",
        "imports",
    )

    def __init__(
        self,
        ok: bool,
        imports: tuple[_ImportEntry, ...] = (),
        raw_defs: dict[str, list[str]] | None = None,
        all_names: frozenset[str] | None = None,
        autouse: tuple[str, ...] = (),
        aliases: dict[str, str] | None = None,
    ) -> None:
        self._ok = ok
        self.imports = imports
        self._raw_defs: dict[str, list[str]] = raw_defs or {}
        self._defs: dict[str, _Def] = {}
        self._checked = False
        self._all_used: frozenset[str] | None = None
        self.all_names = all_names
        self.autouse = autouse
        self.aliases: dict[str, str] = aliases or {}

    @property
    def ok(self) -> bool:
        """Whether the file parsed (and, for cached facts, whether they are intact)."""
        if self._ok and not self._checked:
            self._check()
        return self._ok

    def _check(self) -> None:
        # Checked on first use, and each definition converted on first use: a warm start
        # with no change needs only the imports. A malformed cache entry is unknown facts.
        self._checked = True
        for v in self._raw_defs.values():
            if not (
                type(v) is list
                and len(v) == 3
                and type(v[0]) is str
                and type(v[1]) is str
                and type(v[2]) is str
            ):
                self._ok, self._raw_defs = False, {}
                return

    def quals(self) -> Collection[str]:
        """The qualified names of the definitions."""
        return self._raw_defs.keys() if self.ok else ()

    def digests(self) -> dict[str, str]:
        """Qualified name -> digest of each definition."""
        return {q: v[0] for q, v in self._raw_defs.items()} if self.ok else {}

    def all_names_used(self) -> frozenset[str]:
        """Every name any definition names (module-qualified ones by module and attribute,
        aliases by both names): a superset, cheap to test before single definitions."""
        if self._all_used is None:
            text = " ".join(v[1] for v in self._raw_defs.values()) if self.ok else ""
            names = set(text.replace(":", " ").split())
            names.update([self.aliases[n] for n in names if n in self.aliases])
            self._all_used = frozenset(names)
        return self._all_used

    def get(self, qual: str) -> _Def | None:
        d = self._defs.get(qual)
        if d is None and self.ok and (raw := self._raw_defs.get(qual)) is not None:
            d = self._defs[qual] = _def_from_raw(raw)
        return d

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self._ok,
            "imports": [
                [level, module, None if names is None else [list(n) for n in names]]
                for level, module, names in self.imports
            ],
            "defs": self._raw_defs,
            "all": None if self.all_names is None else sorted(self.all_names),
            "autouse": list(self.autouse),
            "aliases": self.aliases,
        }

    @classmethod
    def from_json(cls, obj: object) -> _Facts | None:
        """The facts a cache entry holds; None when it is not one of ours."""
        if not isinstance(obj, dict):
            return None
        ok, imports, defs = obj.get("ok"), obj.get("imports"), obj.get("defs")
        all_names, autouse, aliases = obj.get("all"), obj.get("autouse"), obj.get("aliases")
        if not (
            isinstance(ok, bool)
            and isinstance(imports, list)
            and isinstance(defs, dict)
            and (all_names is None or _str_list(all_names))
            and _str_list(autouse)
            and isinstance(aliases, dict)
            and all(isinstance(v, str) for v in aliases.values())
        ):
            return None
        entries: list[_ImportEntry] = []
        for item in imports:
            entry = _import_from_json(item)
            if entry is None:
                return None
            entries.append(entry)
        return cls(
            ok,
            tuple(entries),
            defs,
            None if all_names is None else frozenset(all_names),
            tuple(autouse),
            aliases,
        )


def _versions_from_json(obj: object, legacy: bool) -> list[tuple[str, int]]:
    """A path's cached versions: ``[[digest, since], ...]``, newest first; in a version 1
    cache ``[digest, previous digest or null]`` (episodes unknown). [] when malformed."""
    if not isinstance(obj, list):
        return []
    if legacy:
        if len(obj) != 2 or not isinstance(obj[0], str):
            return []
        return [(d, -1) for d in obj if isinstance(d, str)]
    versions = []
    for item in obj[:KEPT_VERSIONS]:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and type(item[1]) is int
        ):
            return []
        versions.append((item[0], item[1]))
    return versions


def _version_at(versions: Iterable[tuple[str, int]], episode: int) -> str | None:
    """The digest a file had in ``episode``: the newest of its ``versions`` (newest first)
    first seen then or before; None when none is known to be that old."""
    for version, since in versions:
        if since < 0:
            return None  # unknown from here on
        if since <= episode:
            return version
    return None


def _differing(old: _Facts, new: _Facts) -> frozenset[str]:
    """The definitions (added, removed or changed) whose digests differ between two
    versions of a file."""
    before, after = old.digests(), new.digests()
    return frozenset(q for q in before.keys() | after.keys() if before.get(q) != after.get(q))


def _str_list(obj: object) -> TypeGuard[list[str]]:
    return isinstance(obj, list) and all(isinstance(s, str) for s in obj)


def _import_from_json(item: object) -> _ImportEntry | None:
    if not (isinstance(item, list) and len(item) == 3):
        return None
    level, module, names = item
    if not (isinstance(level, int) and not isinstance(level, bool) and isinstance(module, str)):
        return None
    if names is None:
        return (level, module, None)
    if not isinstance(names, list):
        return None
    pairs: list[tuple[str, str | None]] = []
    for pair in names:
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and isinstance(pair[0], str)
            and (pair[1] is None or isinstance(pair[1], str))
        ):
            return None
        pairs.append((pair[0], pair[1]))
    return (level, module, tuple(pairs))


# --------------------------------------------------------------------------- extraction


def _extract(data: bytes) -> _Facts:
    """The facts of a file's bytes; a file Python cannot parse has none (``ok`` False)."""
    try:
        with warnings.catch_warnings():
            # Invalid escapes etc. warn at compile time; under ``-W error`` that would raise.
            warnings.simplefilter("ignore")
            tree = ast.parse(data)
        return _facts_of(tree)
    except (SyntaxError, ValueError, RecursionError, OverflowError):
        # ValueError covers NUL bytes and undecodable source (UnicodeDecodeError).
        return _Facts(False)


#: Per AST node class, its fields in reverse (filled as classes are met).
_FIELDS: dict[type, tuple[str, ...]] = {}


class _Walk:
    """One pass over a file's code (pure-Python AST walks are the cost of a cold scan, so
    everything is gathered at once): per piece of code, a digest of its structure without
    positions and the identifiers it names; for the whole file, its imports."""

    def __init__(self) -> None:
        self.imports: dict[_ImportEntry, None] = {}
        self.bindings: dict[str, str] = {}  # name bound by ``import m`` -> m

    def walk(self, nodes: Iterable[ast.AST], header: str = "") -> tuple[str, set[str]]:
        """(digest, names) of some code; an attribute ``x.attr`` rooted at a name ``x`` is
        kept as ``x:attr`` until the file's ``import`` bindings are known (see ``names``)."""
        out = [header]
        names: set[str] = set()
        stack: list[object] = list(nodes)
        stack.reverse()
        append, push, pop = out.append, stack.append, stack.pop
        while stack:
            node = pop()
            cls = type(node)
            fields = _FIELDS.get(cls)
            if fields is None:
                if cls is list:
                    # The length keeps the pre-order serialisation unambiguous.
                    append(f"[{len(node)}")  # type: ignore[arg-type]
                    stack.extend(reversed(node))  # type: ignore[call-overload]
                    continue
                if not isinstance(node, ast.AST):
                    append(repr(node))
                    continue
                fields = _FIELDS[cls] = tuple(reversed(node._fields))
            append(cls.__name__)
            if cls is ast.Name:
                names.add(node.id)  # type: ignore[attr-defined]
            elif cls is ast.Attribute:
                self._attribute(node, names)  # type: ignore[arg-type]
            elif cls is ast.arg:
                names.add(node.arg)  # type: ignore[attr-defined]
            elif cls is ast.Import or cls is ast.ImportFrom or cls is ast.Call:
                self._import(node, names)  # type: ignore[arg-type]
            for field in fields:
                push(getattr(node, field, None))
        h = hashlib.blake2b("\0".join(out).encode("utf-8", "surrogatepass"), digest_size=10)
        return h.hexdigest(), names

    @staticmethod
    def _attribute(node: ast.Attribute, names: set[str]) -> None:
        root = node.value
        while isinstance(root, ast.Attribute):
            root = root.value
        if isinstance(root, ast.Name):
            names.add(f"{root.id}:{node.attr}")
        elif not isinstance(root, ast.Constant):  # "".join is never the project's join
            names.add(node.attr)

    def _import(self, node: ast.AST, names: set[str]) -> None:
        # Imports anywhere count (inside functions too): a lazy import reaches the module.
        if isinstance(node, ast.Import):
            for alias in node.names:
                self.imports[(0, alias.name, None)] = None
                names.add(alias.name.rpartition(".")[2])
                if alias.asname:
                    self.bindings[alias.asname] = alias.name
                else:
                    top = alias.name.partition(".")[0]
                    self.bindings[top] = top
        elif isinstance(node, ast.ImportFrom):
            pairs = tuple((a.name, a.asname) for a in node.names)
            self.imports[(node.level or 0, node.module or "", pairs)] = None
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            first = node.args[0]
            if (
                called in _IMPORT_CALLS
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and first.value
                and not first.value.startswith(".")
            ):
                self.imports[(0, first.value, None)] = None

    def names(self, found: set[str]) -> str:
        """The names as cached: ``x:attr`` becomes ``module:attr`` when ``x`` is bound by
        ``import module`` (resolved against the project when used: ``os.path.join`` is not
        the project's ``join``), else plain ``attr``."""
        tokens: set[str] = set()
        for name in found:
            root, sep, attr = name.partition(":")
            if not sep:
                tokens.add(name)
            elif root in self.bindings:
                tokens.add(f"{self.bindings[root]}:{attr}")
            else:
                tokens.add(attr)
        return " ".join(sorted(tokens))


def _arg_names(args: ast.arguments) -> set[str]:
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    return {a.arg for a in every if a is not None}


def _is_autouse(func: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for deco in func.decorator_list:
        if isinstance(deco, ast.Call):
            for kw in deco.keywords:
                if (
                    kw.arg == "autouse"
                    and isinstance(kw.value, ast.Constant)
                    and kw.value.value is True
                ):
                    return True
    return False


def _target_names(target: ast.expr) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for elt in target.elts for n in _target_names(elt)]
    return []


def _string_items(value: ast.expr | None) -> list[str] | None:
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return [value.value]
    if isinstance(value, (ast.List, ast.Tuple)):
        items = [e.value for e in value.elts if isinstance(e, ast.Constant)]
        if all(isinstance(i, str) for i in items):
            return [i for i in items if isinstance(i, str)]
    return None


class _DefCollector:
    def __init__(self) -> None:
        self.walker = _Walk()
        self.digests: dict[str, list[str]] = {}
        self.refs: dict[str, set[str]] = {}
        self.args: dict[str, set[str]] = {}

    def add(self, qual: str, nodes: list[ast.AST], args: set[str], header: str = "") -> None:
        digest, names = self.walker.walk(nodes, header)
        # A name defined twice (overloads, conditional redefinitions) is one definition.
        self.digests.setdefault(qual, []).append(digest)
        self.refs.setdefault(qual, set()).update(names)
        self.args.setdefault(qual, set()).update(args)

    def add_class(self, node: ast.ClassDef, prefix: str) -> None:
        qual = prefix + node.name
        own: list[ast.AST] = [*node.bases, *node.keywords, *node.decorator_list]
        for stmt in node.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.add(f"{qual}.{stmt.name}", [stmt], _arg_names(stmt.args))
            elif isinstance(stmt, ast.ClassDef):
                self.add_class(stmt, qual + ".")
            else:
                own.append(stmt)
        # The class itself: bases, decorators and class-level statements, not its methods,
        # so a changed method does not make every user of the class "direct".
        self.add(qual, own, set(), header=f"class {node.name}")

    def raw(self) -> dict[str, list[str]]:
        names = self.walker.names
        return {
            q: [
                d[0] if len(d) == 1 else "+".join(d),
                names(self.refs[q]),
                " ".join(sorted(self.args[q])),
            ]
            for q, d in self.digests.items()
        }


def _facts_of(tree: ast.Module) -> _Facts:
    defs = _DefCollector()
    rest: list[ast.AST] = []
    all_names: set[str] | None = None
    autouse: list[str] = []
    aliases: dict[str, str] = {}
    extra_imports: list[_ImportEntry] = []
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            defs.add(stmt.name, [stmt], _arg_names(stmt.args))
            if _is_autouse(stmt):
                autouse.append(stmt.name)
            continue
        if isinstance(stmt, ast.ClassDef):
            defs.add_class(stmt, "")
            continue
        targets: list[str] = []
        value: ast.expr | None = None
        if isinstance(stmt, ast.Assign):
            targets = [n for t in stmt.targets for n in _target_names(t)]
            value = stmt.value
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
            targets = _target_names(stmt.target)
            value = stmt.value
        if not targets:
            if isinstance(stmt, ast.ImportFrom):
                aliases.update({a.asname: a.name for a in stmt.names if a.asname})
            rest.append(stmt)
            continue
        for name in targets:
            defs.add(name, [stmt], set())
        if "__all__" in targets and (items := _string_items(value)) is not None:
            all_names = (all_names or set()) | set(items)
        if "pytest_plugins" in targets:
            extra_imports += [(0, s, None) for s in _string_items(value) or ()]
    if rest:
        defs.add(MODULE_BLOCK, rest, set())
    raw = defs.raw()  # after every walk: the import bindings are complete
    imports = defs.walker.imports
    for entry in extra_imports:
        imports[entry] = None
    return _Facts(
        True,
        tuple(imports),
        raw,
        None if all_names is None else frozenset(all_names),
        tuple(autouse),
        aliases,
    )


# --------------------------------------------------------------------------- the index


#: Callers of callers are followed this many calls away from a changed definition ...
MAX_CALLER_DEPTH = 3
#: The calls a test that only imports a changed module (or is named after it) counts as
#: being away from the change, for :func:`proximity`: farther than any caller chain.
IMPORT_DISTANCE = MAX_CALLER_DEPTH + 1
#: ... and a test naming one at most this many calls away is "direct" (level 2); further
#: away, names are too ambiguous (every ``get`` or ``run`` in a project) for more than level 1.
DIRECT_DEPTH = 1


def _simple_names(qual: str) -> set[str]:
    """The names a definition is called by: ``C.m`` -> ``m``; a dunder method also by its
    class (``C.__init__`` runs on ``C(...)``)."""
    if qual == MODULE_BLOCK:
        return set()
    parts = qual.split(".")
    last = parts[-1]
    if last.startswith("__") and last.endswith("__"):
        # a dunder runs implicitly (``C(...)``, ``pickle``, ``len``): its class is the name
        # code calls it by; its own name (``__doc__``, ``__name__``) is named everywhere
        return {parts[-2]} if len(parts) > 1 else set()
    return {last}


def _parse_node_id(node_id: str) -> tuple[str, str]:
    """``path::Class::test[params]`` -> (``path``, ``Class.test``)."""
    path, _, rest = node_id.partition("::")
    rest = rest.partition("[")[0]  # parameters may contain anything, "::" included
    return path, ".".join(p for p in rest.split("::") if p)


def _normalize(rel: str) -> str:
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise ValueError(f"not a relative path under the root: {rel!r}")
    return pure.as_posix()


def _parent(key: str) -> str:
    return key.rpartition("/")[0]


def _join(base: str, name: str) -> str:
    return f"{base}/{name}" if base else name


def _excluded(key: str) -> bool:
    return any(part in EXCLUDED_DIRS for part in key.split("/"))


def _name_stem(key: str) -> str:
    stem = PurePosixPath(key).stem
    if stem == "__init__":
        stem = PurePosixPath(key).parent.name
    return stem


def _test_stem(name: str) -> str:
    if name.startswith("test_"):
        return name[5:]
    if name.endswith("_test"):
        return name[:-5]
    return name


def _named_after(stem: str, name: str) -> bool:
    return name == stem or name.startswith(stem + "_")


def _file_named_after(stem: str, path: str) -> bool:
    """Whether a test file is named after a module stem: ``test_foo.py``,
    ``test_foo_bar.py``, ``test_bar_foo.py`` ~ ``foo``."""
    own = _test_stem(PurePosixPath(path).stem)
    return _named_after(stem, own) or stem in own.split("_")


def _names_any(qual: str, names: Iterable[str]) -> bool:
    """Whether a test's name (or its class's) holds one of ``names`` as a word:
    ``TestCurry.test_bind_kwargs`` ~ ``curry``, ``bind``; a CamelCase class also in snake
    case: ``NthProductTests.test_basic`` ~ ``nth_product``."""
    words: set[str] = set()
    for part in qual.split("."):
        for form in {part.lower(), _CAMEL_HUMP.sub("_", part).lower()}:
            form = _test_stem(form)
            if form.startswith("test"):
                form = form[4:]
            if form.endswith("_tests"):
                form = form[:-6]
            words.add(form)
            words.update(form.split("_"))
    return any(name.lower().strip("_") in words for name in names)


#: Where a CamelCase name gets an underscore: before an upper-case letter that follows a
#: lower-case letter or a digit, or that starts a capitalised word after an acronym.
_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


class DependencyIndex:
    """The static dependency index of one project (``root``), cached in ``cache_file``."""

    def __init__(self, root: Path, cache_file: Path | None = None) -> None:
        self._root = os.fspath(root)
        self._cache_file = None if cache_file is None else Path(cache_file)
        self._loaded = False
        self._dirty = False
        self._raw_facts: dict[str, object] = {}  # digest -> cached JSON, converted on use
        self._facts: dict[str, _Facts] = {}  # digest -> facts
        self._memo: dict[str, tuple[int, int, str]] = {}  # path -> (mtime_ns, size, digest)
        #: path -> its last versions, newest first: (digest, the episode it was first seen
        #: in; -1 unknown)
        self._history: dict[str, list[tuple[str, int]]] = {}
        self._digests: dict[str, str] = {}  # scanned path -> digest
        self._file_facts: dict[str, _Facts] = {}  # scanned path -> facts
        self._fallback: dict[str, _Facts] = {}  # unparsable path -> its last good facts
        self._tests: set[str] = set()
        self._conftests: dict[str, tuple[str, ...]] = {}  # test path -> conftests above it
        self._roots: list[str] = []  # import roots, relative ("" is the root)
        self._used_old: set[str] = set()  # old digests ``changes`` compared with
        self._scanned = False
        self._listings: dict[str, frozenset[str]] = {}
        self._resolved: dict[tuple[str, ...], str | None] = {}
        self._candidates_memo: dict[tuple[str, _ImportEntry], list[str]] = {}
        self._edges: dict[str, list[tuple[str, bool]]] | None = None

    # ------------------------------------------------------------------ public API

    @property
    def digests(self) -> dict[str, str]:
        """Every scanned file (relative POSIX path) -> sha256 hex of its bytes."""
        return dict(self._digests)

    def scan(self, test_files: Collection[str]) -> None:
        """Digest and analyse the test files (relative POSIX paths under root), the
        conftest.py files above them, and every project module they import, transitively."""
        if isinstance(test_files, (str, bytes)) or not isinstance(test_files, Collection):
            raise TypeError("test_files must be a collection of relative paths")
        keys: list[str] = []
        for item in test_files:
            if not isinstance(item, str):
                raise TypeError(f"test file paths are str, not {type(item).__name__}")
            keys.append(_normalize(item))
        self._load_cache()
        self._scanned = True
        # The filesystem may have changed since an earlier scan of this index.
        self._listings.clear()
        self._resolved.clear()
        self._candidates_memo.clear()
        self._edges = None
        tests = [k for k in dict.fromkeys(keys) if not _excluded(k)]
        queue: deque[str] = deque()
        for key in tests:
            self._tests.add(key)
            conftests = self._conftests_above(key)
            self._conftests[key] = conftests
            self._add_root(self._basedir(key))
            for conftest in conftests:
                self._add_root(self._basedir(conftest))
            queue.append(key)
            queue.extend(conftests)
        for fixed in ("", "src"):
            self._add_root(fixed)
        seen: set[str] = set()
        while queue:
            key = queue.popleft()
            if key in seen:
                continue
            seen.add(key)
            found = self._load(key)
            if found is None:
                continue
            digest, facts = found
            self._digests[key] = digest
            self._file_facts[key] = facts
            if not facts.ok and (good := self._last_good(key, digest)) is not None:
                # Mid-edit syntax errors must not drop the file's dependencies from the
                # scan: they would all look new next time. Keep following its last imports.
                self._fallback[key] = good
                facts = good
            for entry in facts.imports:
                queue.extend(c for c in self._candidates(key, entry) if c not in seen)

    def changes(self, stored: Mapping[str, str]) -> ChangeSet:
        """Files whose digest differs from ``stored`` (the digests the last run recorded; a
        scanned file absent from a non-empty ``stored`` is new; an empty ``stored`` means
        nothing is known: no change). For each changed file, the changed definitions, from
        the cached facts of its old digest; None when those are unknown."""
        if not isinstance(stored, Mapping):
            raise TypeError("stored must be a mapping of path -> digest")
        self._require_scan()
        if not stored:
            return ChangeSet(frozenset(), {})
        definitions: dict[str, frozenset[str] | None] = {}
        for path, digest in self._digests.items():
            old = stored.get(path)
            if old != digest:
                definitions[path] = self._changed_definitions(path, old)
        return ChangeSet(frozenset(definitions), definitions)

    def changes_since(self, episode: int) -> ChangeSet:
        """The scanned files that differ from their version in ``episode`` (the newest
        version first seen then or before), with their changed definitions; a file whose
        version then the cache does not know counts as changed, definitions unknown (None)."""
        self._require_scan()
        definitions: dict[str, frozenset[str] | None] = {}
        for path, digest in self._digests.items():
            then = _version_at(self._history.get(path, ()), episode)
            if then != digest:
                definitions[path] = None if then is None else self._changed_definitions(path, then)
        return ChangeSet(frozenset(definitions), definitions)

    def changes_between(self, first: int, second: int) -> ChangeSet | None:
        """The scanned files whose version in episode ``second`` differs from their version
        in episode ``first`` (each the newest version first seen then or before), with the
        definitions that differ — what changed between two earlier runs. A file the cache
        knows in neither episode (added later) is left out; None when the answer is unknown:
        a file known in one of them only (added in between), one whose kept versions no
        longer reach back to ``first``, a version whose facts are gone or did not parse."""
        self._require_scan()
        definitions: dict[str, frozenset[str] | None] = {}
        for path in self._digests:
            versions = self._history.get(path, ())
            before, after = _version_at(versions, first), _version_at(versions, second)
            if before is None and after is None:
                if len(versions) >= KEPT_VERSIONS or any(since < 0 for _, since in versions):
                    return None  # older than what the cache keeps (or of unknown age)
                continue  # first seen after both episodes
            if before is None or after is None:
                return None
            if before == after:
                continue
            old, new = self._get_facts(before), self._get_facts(after)
            if old is None or new is None or not old.ok or not new.ok:
                return None
            self._used_old.update((before, after))
            definitions[path] = _differing(old, new)
        return ChangeSet(frozenset(definitions), definitions)

    def impacts(self, changes: ChangeSet, test_ids: Iterable[str]) -> dict[str, Impact]:
        """Per pytest node id (``path::Class::test_name[params]``, ``path::test_name``), its
        Impact; tests with none are absent."""
        if not isinstance(changes, ChangeSet):
            raise TypeError("changes must be a ChangeSet")
        if isinstance(test_ids, (str, bytes)):
            raise TypeError("test_ids must be an iterable of node ids, not one string")
        self._require_scan()
        ids = list(test_ids)
        for node_id in ids:
            if not isinstance(node_id, str):
                raise TypeError(f"node ids are str, not {type(node_id).__name__}")
        relevant: list[tuple[str, frozenset[str] | None]] = []
        for path in sorted(changes.files):
            defs = changes.definitions.get(path)
            # Only comments/blank lines changed: nothing to run early for it.
            if path in self._digests and (defs is None or defs):
                relevant.append((path, defs))
        if not relevant:
            return {}
        by_path: dict[str, list[tuple[str, str]]] = {}
        for node_id in ids:
            path, qual = _parse_node_id(node_id)
            if path in self._digests:
                by_path.setdefault(path, []).append((node_id, qual))
        if not by_path:
            return {}
        return _ImpactPass(self, relevant, by_path).run()

    def save(self, episode: int = -1) -> None:
        """Write the cache atomically, pruned to the files seen in this index's scans (with
        the facts of each file's previous version, to diff against next time, and the
        ``episode`` a version was first seen in: this one for a new version); errors are
        ignored: the cache is an optimisation."""
        if self._cache_file is None:
            return
        history: dict[str, list[tuple[str, int]]] = {}
        keep: set[str] = set(self._used_old)
        for path, digest in self._digests.items():
            before = self._history.get(path, [])
            if before[:1] and before[0][0] == digest:
                history[path] = before
            else:
                history[path] = [(digest, episode), *before[: KEPT_VERSIONS - 1]]
            keep.update(version for version, _ in history[path])
        if not self._dirty and history == self._history:
            return  # nothing new, nothing to prune: a warm start writes nothing
        facts: dict[str, object] = {}
        for digest in sorted(keep):
            if digest in self._facts:
                facts[digest] = self._facts[digest].to_json()
            elif digest in self._raw_facts:
                facts[digest] = self._raw_facts[digest]
        payload = {
            "version": CACHE_VERSION,
            "facts": facts,
            "memo": {p: list(m) for p, m in self._memo.items() if p in self._digests},
            "paths": {path: [list(v) for v in versions] for path, versions in history.items()},
        }
        target = self._cache_file
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(payload, separators=(",", ":")), encoding="utf-8")
            os.replace(tmp, target)
            self._dirty = False
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()

    # ------------------------------------------------------------------ cache and files

    def _require_scan(self) -> None:
        if not self._scanned:
            raise RuntimeError("DependencyIndex.scan() must run before changes()/impacts()")

    def _load_cache(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self._cache_file is None:
            return
        try:
            obj = json.loads(self._cache_file.read_bytes())
        except (OSError, ValueError, RecursionError):
            return  # missing or corrupt: start cold
        if not isinstance(obj, dict) or obj.get("version") not in (1, CACHE_VERSION):
            return
        legacy = obj["version"] == 1
        facts, memo, paths = obj.get("facts"), obj.get("memo"), obj.get("paths")
        if isinstance(facts, dict):
            self._raw_facts = facts
        if isinstance(memo, dict):
            for path, m in memo.items():
                if (
                    isinstance(m, list)
                    and len(m) == 3
                    and all(isinstance(v, int) and not isinstance(v, bool) for v in m[:2])
                    and isinstance(m[2], str)
                ):
                    self._memo[path] = (m[0], m[1], m[2])
        if isinstance(paths, dict):
            for path, h in paths.items():
                versions = _versions_from_json(h, legacy)
                if versions:
                    self._history[path] = versions

    def _get_facts(self, digest: str) -> _Facts | None:
        facts = self._facts.get(digest)
        if facts is None and digest in self._raw_facts:
            facts = _Facts.from_json(self._raw_facts.pop(digest))
            if facts is not None:
                self._facts[digest] = facts
        return facts

    def _load(self, key: str) -> tuple[str, _Facts] | None:
        """The digest and facts of a file; None when it cannot be read."""
        full = f"{self._root}/{key}"
        try:
            st = os.stat(full)
        except (OSError, ValueError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        memo = self._memo.get(key)
        if memo is not None and memo[0] == st.st_mtime_ns and memo[1] == st.st_size:
            facts = self._get_facts(memo[2])
            if facts is not None:
                return memo[2], facts
        try:
            with open(full, "rb") as fh:
                data = fh.read()
        except OSError:
            return None
        digest = hashlib.sha256(data).hexdigest()
        facts = self._get_facts(digest)
        if facts is None:
            facts = self._facts[digest] = _extract(data)
            self._dirty = True
        if time.time_ns() - st.st_mtime_ns > _RACY_SECONDS * 1e9:
            entry = (st.st_mtime_ns, st.st_size, digest)
            if self._memo.get(key) != entry:
                self._memo[key] = entry
                self._dirty = True
        elif self._memo.pop(key, None) is not None:
            self._dirty = True
        if self._history.get(key, [("", -1)])[0][0] != digest:
            self._dirty = True
        return digest, facts

    def _last_good(self, key: str, digest: str) -> _Facts | None:
        """The facts of the last version of a file that parsed, if the cache has them."""
        for candidate, _ in self._history.get(key, ()):
            if candidate != digest:
                facts = self._get_facts(candidate)
                if facts is not None and facts.ok:
                    return facts
        return None

    def _changed_definitions(self, path: str, old: object) -> frozenset[str] | None:
        new = self._file_facts.get(path)
        if new is None or not new.ok:
            return None
        if old is None:
            return frozenset(new.quals())  # a new file: everything in it is new
        if not isinstance(old, str):
            return None  # an alien value in the store: unknown
        self._used_old.add(old)
        previous = self._get_facts(old)
        if previous is None or not previous.ok:
            return None
        return _differing(previous, new)

    # ------------------------------------------------------------------ resolution

    def _listing(self, rel_dir: str) -> frozenset[str]:
        names = self._listings.get(rel_dir)
        if names is None:
            try:
                names = frozenset(os.listdir(f"{self._root}/{rel_dir}" if rel_dir else self._root))
            except (OSError, ValueError):
                names = frozenset()
            self._listings[rel_dir] = names
        return names

    def _add_root(self, rel_dir: str) -> None:
        if rel_dir not in self._roots:
            self._roots.append(rel_dir)

    def _basedir(self, key: str) -> str:
        """The directory pytest's "prepend" import mode puts on sys.path for a test file:
        its first ancestor without ``__init__.py``."""
        d = _parent(key)
        while d and "__init__.py" in self._listing(d):
            d = _parent(d)
        return d

    def _conftests_above(self, key: str) -> tuple[str, ...]:
        found: list[str] = []
        d = _parent(key)
        while True:
            if "conftest.py" in self._listing(d):
                found.append(_join(d, "conftest.py"))
            if not d:
                return tuple(found)
            d = _parent(d)

    def _resolve_in(self, base: str, parts: tuple[str, ...]) -> str | None:
        """``base/a/b/c/__init__.py`` or ``base/a/b/c.py`` for parts (a, b, c); the package
        ``base/__init__.py`` for no parts. Only directory listings are read (cached), and
        only of directories that exist: most names asked for are not the project's."""
        d = base
        for part in parts:
            if not part or part in EXCLUDED_DIRS or "/" in part or part in (".", ".."):
                return None
        for part in parts[:-1]:
            if part not in self._listing(d):
                return None
            d = _join(d, part)
        if not parts:
            return _join(d, "__init__.py") if "__init__.py" in self._listing(d) else None
        last = parts[-1]
        entries = self._listing(d)
        if last in entries:  # a package wins over a module
            package = _join(d, last)
            if "__init__.py" in self._listing(package):
                return _join(package, "__init__.py")
        if last + ".py" in entries:
            return _join(d, last + ".py")
        return None

    def _resolve_absolute(self, parts: tuple[str, ...]) -> str | None:
        if parts in self._resolved:
            return self._resolved[parts]
        found = None
        top = parts[0] if parts else ""
        for root in self._roots:
            entries = self._listing(root)
            # Most names are the stdlib's or site-packages': rejected by one lookup per root.
            if top in entries or top + ".py" in entries:
                found = self._resolve_in(root, parts)
                if found is not None:
                    break
        self._resolved[parts] = found
        return found

    def _module_chain(
        self, key: str, level: int, module: str
    ) -> tuple[list[str | None], Callable[[str], str | None] | None]:
        """The files of the module's parent packages and of the module itself (last; None
        where nothing under the root matches), and a resolver for its submodules."""
        parts = tuple(module.split(".")) if module else ()
        if level == 0:
            if not parts:
                return [None], None
            chain = [self._resolve_absolute(parts[:i]) for i in range(1, len(parts) + 1)]
            return chain, lambda name: self._resolve_absolute((*parts, name))
        base = _parent(key)
        for _ in range(level - 1):
            if not base:
                return [None], None  # above the root
            base = _parent(base)
        chain = [self._resolve_in(base, parts[:i]) for i in range(len(parts) + 1)]
        return chain, lambda name: self._resolve_in(base, (*parts, name))

    def _candidates(self, key: str, entry: _ImportEntry) -> list[str]:
        """Every project file an import may load: the module, its parent packages and, for
        ``from X import Y``, the submodule X.Y (scan broadly; reach is refined later)."""
        level, module, names = entry
        # Test files share most of their imports: an absolute import resolves the same
        # everywhere, a relative one the same within a directory.
        memo_key = (_parent(key) if level else "", entry)
        found = self._candidates_memo.get(memo_key)
        if found is None:
            chain, sub = self._module_chain(key, level, module)
            found = [f for f in chain if f is not None]
            if names is not None and sub is not None:
                found += [f for n, _ in names if n != "*" and (f := sub(n)) is not None]
            found = self._candidates_memo[memo_key] = [f for f in found if not _excluded(f)]
        return found

    # ------------------------------------------------------------------ the import graph

    def _edge_map(self) -> dict[str, list[tuple[str, bool]]]:
        """Per scanned file, the files its imports reach: (file, transitive). Transitive
        edges lead on to what that file imports; the others (parent packages' __init__,
        which run but whose own imports are not what was asked for) stop there."""
        if self._edges is None:
            self._edges = {
                key: self._edges_of(key, self._fallback.get(key, facts))
                for key, facts in self._file_facts.items()
            }
        return self._edges

    def _edges_of(self, key: str, facts: _Facts) -> list[tuple[str, bool]]:
        out: dict[tuple[str, bool], None] = {}

        def add(target: str | None, transitive: bool) -> None:
            if target is not None and target != key and target in self._digests:
                out[(target, transitive)] = None

        for level, module, names in facts.imports:
            chain, sub = self._module_chain(key, level, module)
            *parents, target = chain
            for parent in parents:
                add(parent, False)
            if names is None or sub is None:
                add(target, True)
                continue
            for name, _ in names:
                if name == "*":
                    add(target, True)
                    continue
                submodule = sub(name)
                if submodule is not None:
                    add(submodule, True)
                    add(target, False)
                    continue
                if target is None:
                    continue
                via = self._reexport(target, name, 0) if target.endswith("__init__.py") else None
                if via is None:
                    add(target, True)
                else:
                    add(target, False)
                    for v in via:
                        add(v, True)
        return list(out)

    def _reexport(self, init: str, name: str, depth: int) -> set[str] | None:
        """The project files a package's ``__init__`` takes ``name`` from (empty: from outside
        the project); None when it defines it itself or the source is unknown."""
        facts = self._file_facts.get(init)
        if facts is None or not facts.ok or depth > _MAX_REEXPORT_DEPTH:
            return None
        if name in facts.quals():
            return None
        for level, module, names in facts.imports:
            if names is None:
                continue
            chain, sub = self._module_chain(init, level, module)
            source = chain[-1]
            for imported, asname in names:
                if imported == "*":
                    if (
                        source is not None
                        and source != init
                        and self._provides(source, name, depth)
                    ):
                        deeper = (
                            self._reexport(source, name, depth + 1)
                            if source.endswith("__init__.py")
                            else None
                        )
                        return deeper if deeper else {source}
                elif (asname or imported) == name:
                    submodule = sub(imported) if sub is not None else None
                    if submodule is not None:
                        return {submodule}
                    if source is None:
                        return set()
                    if source.endswith("__init__.py") and source != init:
                        deeper = self._reexport(source, imported, depth + 1)
                        return deeper if deeper else {source}
                    return {source}
        return None

    def _provides(self, source: str, name: str, depth: int) -> bool:
        """Whether ``from source import *`` binds ``name``."""
        facts = self._file_facts.get(source)
        if facts is None or not facts.ok:
            return False
        if facts.all_names is not None:
            return name in facts.all_names
        if name in facts.quals() and not name.startswith("_"):
            return True
        return source.endswith("__init__.py") and bool(self._reexport(source, name, depth + 1))

    def _reverse(self) -> dict[str, list[tuple[str, bool]]]:
        reverse: dict[str, list[tuple[str, bool]]] = {}
        for src, targets in self._edge_map().items():
            for dst, transitive in targets:
                reverse.setdefault(dst, []).append((src, transitive))
        return reverse


class _ImpactPass:
    """One ``impacts`` computation (runs only when something relevant changed)."""

    def __init__(
        self,
        index: DependencyIndex,
        relevant: list[tuple[str, frozenset[str] | None]],
        by_path: dict[str, list[tuple[str, str]]],
    ) -> None:
        self.index = index
        self.facts = index._file_facts
        self.relevant = relevant
        self.by_path = by_path
        self.result: dict[str, tuple[tuple[int, int], Impact]] = {}
        self.refs_cache: dict[tuple[str, str], frozenset[str]] = {}
        self.def_refs_cache: dict[tuple[str, str], frozenset[str]] = {}
        self.project_modules: dict[str, bool] = {}
        #: How many calls away from a changed definition each affected name is.
        self.depth: dict[str, int] = {}
        #: A changed name -> the own names of the changed definitions it stands for (a
        #: dunder's class stands for ``eq`` of ``__eq__``): a test named after one of these
        #: names the change itself.
        self.own_words: dict[str, set[str]] = {}

    def run(self) -> dict[str, Impact]:
        reverse = self.index._reverse()
        for changed, defs in self.relevant:
            reach = _reachers(reverse, changed)
            affected = self._affected(defs, reach) if defs else {}
            stem = _name_stem(changed)
            # Only a module under test names tests; a changed test file or conftest does not.
            matchable = (
                stem not in _UNMATCHABLE_STEMS
                and changed not in self.index._tests
                and PurePosixPath(changed).name != "conftest.py"
                and _test_stem(stem) == stem
            )
            for path, tests in self.by_path.items():
                conftests = self.index._conftests.get(path, ())
                if path in reach:
                    self._judge(changed, defs, affected, path, tests, None)
                elif via := next((c for c in conftests if c in reach), None):
                    self._judge(changed, defs, affected, path, tests, via)
                elif matchable:
                    self._match_names(changed, stem, path, tests)
        return {node_id: impact for node_id, (_, impact) in self.result.items()}

    def _offer(self, node_id: str, rank: tuple[int, int], impact: Impact) -> None:
        """Keep the strongest finding per test: the highest rank, then the closest."""
        current = self.result.get(node_id)
        if current is None or (rank, -impact.proximity) > (
            current[0],
            -current[1].proximity,
        ):
            self.result[node_id] = (rank, impact)

    def _judge(
        self,
        changed: str,
        defs: frozenset[str] | None,
        affected: dict[str, str],
        path: str,
        tests: list[tuple[str, str]],
        via: str | None,
    ) -> None:
        """Rank the tests of a file that reaches ``changed`` (through the conftest ``via``
        when the file itself does not)."""
        facts = self.facts.get(path)
        own_file = defs is not None and path == changed
        # No test of a file whose code (and autouse fixtures) names no affected name can.
        names_any = (
            affected
            and facts is not None
            and not affected.keys().isdisjoint(self._file_names(path, facts))
        )
        file_named = _file_named_after(_name_stem(changed), path)
        for node_id, qual in tests:
            if own_file and defs is not None and self._own_def(facts, qual) in defs:
                self._offer(node_id, (2, 1), Impact(2, "its own code changed", 0, 0))
                continue
            if names_any and facts is not None:
                hit = self._test_refs(path, facts, qual) & affected.keys()
                if hit:
                    name = min(hit, key=lambda n: (self.depth.get(n, 0), n))
                    own = self._own_def(facts, qual)
                    why = self._why(name, affected, facts, own, changed)
                    # the nearer the call, the likelier the test sees the change
                    calls = self.depth.get(name, 0)
                    origin = affected[name]
                    if _names_any(qual, self.own_words.get(origin, (origin,))):
                        named = NAMED_CHANGE
                    elif _names_any(qual, (name, origin)):
                        named = NAMED_CALLER
                    else:
                        named = UNNAMED
                    near = proximity(calls, named, file_named)
                    if calls <= DIRECT_DEPTH:
                        self._offer(node_id, (2, 0), Impact(2, why, 0, near))
                    else:
                        self._offer(node_id, (1, 2), Impact(1, why, calls, near))
                    continue
            if path == changed:
                self._offer(node_id, (1, 1), Impact(1, "its file changed", 0, 0))
                continue
            if via == changed:
                reason = f"uses {changed} (changed)"
            elif via is not None:
                reason = f"uses {via}, which imports {changed} (changed)"
            else:
                reason = f"imports {changed} (changed)"
            near = proximity(IMPORT_DISTANCE, False, file_named)
            self._offer(node_id, (1, 0), Impact(1, reason, 0, near))

    @staticmethod
    def _why(
        name: str, affected: dict[str, str], facts: _Facts, own: str | None, changed: str
    ) -> str:
        origin = affected[name]
        takes = own is not None and (d := facts.get(own)) is not None and name in d.args
        verb = "uses fixture" if takes else "calls"
        if origin == name:
            return f"{verb} {name}, changed in {changed}"
        return f"{verb} {name}, which reaches {origin}, changed in {changed}"

    def _match_names(
        self, changed: str, stem: str, path: str, tests: list[tuple[str, str]]
    ) -> None:
        pure = PurePosixPath(path)
        by_file = _named_after(stem, _test_stem(pure.stem)) or stem in pure.parts[:-1]
        for node_id, qual in tests:
            by_name = _named_after(stem, _test_stem(qual.rpartition(".")[2]))
            if by_file or by_name:
                near = proximity(IMPORT_DISTANCE, by_name, by_file)
                self._offer(node_id, (1, 0), Impact(1, f"named after {changed} (changed)", 0, near))

    @staticmethod
    def _own_def(facts: _Facts | None, qual: str) -> str | None:
        if facts is None or not facts.ok or not qual:
            return None
        quals = facts.quals()
        if qual in quals:
            return qual
        if "." in qual:
            # Inherited test methods: collected under the subclass, defined in a base class.
            name = qual.rpartition(".")[2]
            for q in sorted(quals):
                if q.endswith("." + name):
                    return q
        return None

    def _file_names(self, path: str, facts: _Facts) -> frozenset[str]:
        """Every name a file's code may name (a superset), with its conftests' autouse
        fixtures: a cheap filter before looking at single definitions."""
        names = set(facts.all_names_used())
        for conftest in self.index._conftests.get(path, ()):
            if (cf := self.facts.get(conftest)) is not None:
                names.update(cf.autouse)
        return frozenset(names)

    def _test_refs(self, path: str, facts: _Facts, qual: str) -> frozenset[str]:
        """The names a test's code names: its body and arguments, its class's own statements
        and setup code, its module's setup code, and the autouse fixtures of its module and
        conftests."""
        cached = self.refs_cache.get((path, qual))
        if cached is not None:
            return cached
        names: set[str] = set()
        own = self._own_def(facts, qual)
        if own is not None:
            names |= self._def_refs(path, facts, own)
            quals = facts.quals()
            prefix = own.rpartition(".")[0]
            while prefix:
                # the class's own statements: class attributes its tests read through
                # ``self`` (``functions = (mi.running_mean, ...)``), its bases, decorators
                if prefix in quals:
                    names |= self._def_refs(path, facts, prefix)
                for setup in _CLASS_SETUP:
                    if f"{prefix}.{setup}" in quals:
                        names |= self._def_refs(path, facts, f"{prefix}.{setup}")
                prefix = prefix.rpartition(".")[0]
            for setup in _MODULE_SETUP:
                if setup in quals:
                    names |= self._def_refs(path, facts, setup)
            names.update(facts.autouse)
            for conftest in self.index._conftests.get(path, ()):
                if (cf := self.facts.get(conftest)) is not None:
                    names.update(cf.autouse)
        result = frozenset(names)
        self.refs_cache[(path, qual)] = result
        return result

    def _def_refs(self, path: str, facts: _Facts, qual: str) -> frozenset[str]:
        """A definition's names: ``module.attr`` counted only for project modules, and
        names imported under an alias also by their own name."""
        cached = self.def_refs_cache.get((path, qual))
        if cached is not None:
            return cached
        d = facts.get(qual)
        names: set[str] = set()
        if d is not None:
            names.update(d.refs)
            for module, attr in d.module_refs:
                project = self.project_modules.get(module)
                if project is None:
                    parts = tuple(module.split("."))
                    project = self.project_modules[module] = (
                        self.index._resolve_absolute(parts) is not None
                    )
                if project:
                    names.add(attr)
            aliases = facts.aliases
            names.update([aliases[n] for n in names if n in aliases])
        result = frozenset(names)
        self.def_refs_cache[(path, qual)] = result
        return result

    def _affected(self, defs: frozenset[str], reach: set[str]) -> dict[str, str]:
        """The changed names and, transitively, the names of the definitions (in files that
        reach the change) that name them -> the changed name each comes from. Names only:
        ambiguity is accepted, this is a ranking hint."""
        affected: dict[str, str] = {}
        self.own_words = {}
        for qual in sorted(defs):
            own = qual.rpartition(".")[2].strip("_")
            for name in sorted(_simple_names(qual)):
                affected.setdefault(name, name)
                if own:
                    self.own_words.setdefault(name, set()).add(own)
        frontier = set(affected)
        files = sorted(p for p in reach if (f := self.facts.get(p)) is not None and f.ok)
        self.depth = dict.fromkeys(affected, 0)
        depth = 0
        while frontier and depth < MAX_CALLER_DEPTH:
            depth += 1
            found: dict[str, str] = {}
            for path in files:
                facts = self.facts[path]
                if facts.all_names_used().isdisjoint(frontier):
                    continue
                for qual in facts.quals():
                    callers = _simple_names(qual).difference(affected)
                    if not callers:
                        continue
                    hit = self._def_refs(path, facts, qual) & frontier
                    if hit:
                        origin = affected[min(hit)]
                        for caller in sorted(callers):
                            found.setdefault(caller, origin)
            for name, origin in found.items():
                affected.setdefault(name, origin)
                self.depth.setdefault(name, depth)
            frontier = set(found)
        return affected


def _reachers(reverse: dict[str, list[tuple[str, bool]]], target: str) -> set[str]:
    """The scanned files that reach ``target`` (itself included): those importing it, and
    those transitively importing them."""
    found = {target}
    queue = deque(p for p, _ in reverse.get(target, ()) if p not in found)
    found.update(queue)
    while queue:
        for p, transitive in reverse.get(queue.popleft(), ()):
            if transitive and p not in found:
                found.add(p)
                queue.append(p)
    return found
