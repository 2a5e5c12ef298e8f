"""The static dependency index: which tests can reach what changed (changes/impact.py)."""

from __future__ import annotations

import hashlib
import json
import os
import textwrap
import time
from pathlib import Path

import pytest

import pytest_qlearn.changes.impact as impact_module
from pytest_qlearn.changes.impact import ChangeSet, DependencyIndex, Impact


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content).lstrip("\n"), encoding="utf-8")


def scanned(root: Path, tests: list[str], cache: Path | None = None) -> DependencyIndex:
    index = DependencyIndex(root, cache)
    index.scan(tests)
    return index


def plain(impacts: dict[str, Impact]) -> dict[str, Impact]:
    """The findings without their proximity (tested on its own, below)."""
    return {node_id: found._replace(proximity=0) for node_id, found in impacts.items()}


def edit(root: Path, rel: str, old: str, new: str) -> None:
    path = root / rel
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def run_after_edit(
    root: Path, tests: list[str], ids: list[str], rel: str, old: str, new: str
) -> tuple[ChangeSet, dict[str, Impact]]:
    """Scan, record, edit one file, scan again with the same cache: the next run's view."""
    cache = root.parent / f"{root.name}-cache.json"
    first = scanned(root, tests, cache)
    stored = first.digests
    first.save()
    edit(root, rel, old, new)
    second = scanned(root, tests, cache)
    changes = second.changes(stored)
    return changes, second.impacts(changes, ids)


# ----------------------------------------------------------------------------- resolution


def test_src_layout_resolves_project_modules_and_ignores_the_stdlib(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "src/pkg/__init__.py": "",
            "src/pkg/mod.py": "import json\nfrom .util import helper\n",
            "src/pkg/util.py": "def helper():\n    return 1\n",
            "src/pkg/unused.py": "X = 1\n",
            "tests/test_mod.py": """
                import os
                import pytest
                from pkg.mod import helper
            """,
        },
    )
    index = scanned(tmp_path, ["tests/test_mod.py"])
    assert set(index.digests) == {
        "tests/test_mod.py",
        "src/pkg/__init__.py",
        "src/pkg/mod.py",
        "src/pkg/util.py",
    }
    data = (tmp_path / "src/pkg/util.py").read_bytes()
    assert index.digests["src/pkg/util.py"] == hashlib.sha256(data).hexdigest()


def test_flat_layout_and_helpers_beside_the_tests(tmp_path: Path) -> None:
    # tests/ has no __init__.py: pytest's prepend mode puts it on sys.path, so
    # ``import helpers`` is tests/helpers.py.
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/core.py": "def run():\n    return 1\n",
            "tests/helpers.py": "import pkg.core\n",
            "tests/test_core.py": "import helpers\n",
        },
    )
    index = scanned(tmp_path, ["tests/test_core.py"])
    assert set(index.digests) == {
        "tests/test_core.py",
        "tests/helpers.py",
        "pkg/__init__.py",
        "pkg/core.py",
    }


def test_relative_imports_resolve_against_the_files_package(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a/__init__.py": "",
            "pkg/a/one.py": "from . import two\nfrom .three import f\nfrom ..b import g\n",
            "pkg/a/two.py": "",
            "pkg/a/three.py": "def f():\n    pass\n",
            "pkg/b.py": "def g():\n    pass\n",
            "tests/test_one.py": "from pkg.a.one import f\n",
        },
    )
    index = scanned(tmp_path, ["tests/test_one.py"])
    assert {"pkg/a/one.py", "pkg/a/two.py", "pkg/a/three.py", "pkg/b.py"} <= set(index.digests)


def test_virtualenvs_and_build_output_are_never_scanned(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "build/__init__.py": "",
            "build/lib.py": "",
            ".venv/lib/site-packages/dep.py": "",
            "tests/test_x.py": "import build.lib\nimport dep\n",
        },
    )
    assert set(scanned(tmp_path, ["tests/test_x.py", ".venv/t.py"]).digests) == {"tests/test_x.py"}


def test_from_package_import_name_follows_the_reexport_only(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "toolz/__init__.py": """
                from .itertoolz import groupby
                from .functoolz import *
                from .dicttoolz import *
            """,
            "toolz/itertoolz.py": "def groupby(key, seq):\n    return {}\n",
            "toolz/functoolz.py": "def compose(*fs):\n    return fs\n",
            "toolz/dicttoolz.py": """
                __all__ = ["merge"]

                def merge(*ds):
                    return {}

                def _private():
                    pass
            """,
            "tests/test_groupby.py": """
                from toolz import groupby

                def test_groupby():
                    assert groupby(len, []) == {}
            """,
            "tests/test_compose.py": (
                "from toolz import compose\n\ndef test_compose():\n    assert compose()\n"
            ),
            "tests/test_merge.py": "from toolz import merge\n\ndef test_merge():\n    merge()\n",
        },
    )
    tests = ["tests/test_groupby.py", "tests/test_compose.py", "tests/test_merge.py"]
    ids = [
        "tests/test_groupby.py::test_groupby",
        "tests/test_compose.py::test_compose",
        "tests/test_merge.py::test_merge",
    ]
    # Changing compose reaches only the test that takes compose from the package.
    _, impacts = run_after_edit(
        tmp_path, tests, ids, "toolz/functoolz.py", "return fs", "return list(fs)"
    )
    assert plain(impacts) == {
        "tests/test_compose.py::test_compose": Impact(
            2, "calls compose, changed in toolz/functoolz.py"
        )
    }
    # A name listed in a star-imported module's __all__ is found there too.
    _, impacts = run_after_edit(
        tmp_path, tests, ids, "toolz/dicttoolz.py", "return {}", "return dict()"
    )
    assert set(impacts) == {"tests/test_merge.py::test_merge"}
    assert impacts["tests/test_merge.py::test_merge"].level == 2


def test_importing_the_package_itself_reaches_everything_it_imports(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "toolz/__init__.py": "from .itertoolz import *\nfrom .functoolz import *\n",
            "toolz/itertoolz.py": "def groupby():\n    return 1\n",
            "toolz/functoolz.py": "def compose():\n    return 1\n",
            "tests/test_pkg.py": "import toolz\n\ndef test_version():\n    assert toolz\n",
        },
    )
    _, impacts = run_after_edit(
        tmp_path,
        ["tests/test_pkg.py"],
        ["tests/test_pkg.py::test_version"],
        "toolz/functoolz.py",
        "return 1",
        "return 2",
    )
    assert plain(impacts) == {
        "tests/test_pkg.py::test_version": Impact(1, "imports toolz/functoolz.py (changed)")
    }


def test_conftest_files_above_a_test_are_reached_with_their_imports(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "conftest.py": "import pkg.fixtures_support\n",
            "tests/conftest.py": "",
            "tests/deep/test_x.py": "def test_x():\n    pass\n",
            "other/conftest.py": "import pkg.unrelated\n",
            "pkg/__init__.py": "",
            "pkg/fixtures_support.py": "VALUE = 1\n",
            "pkg/unrelated.py": "",
        },
    )
    index = scanned(tmp_path, ["tests/deep/test_x.py"])
    assert set(index.digests) == {
        "tests/deep/test_x.py",
        "tests/conftest.py",
        "conftest.py",
        "pkg/__init__.py",
        "pkg/fixtures_support.py",
    }
    _, impacts = run_after_edit(
        tmp_path,
        ["tests/deep/test_x.py"],
        ["tests/deep/test_x.py::test_x"],
        "pkg/fixtures_support.py",
        "VALUE = 1",
        "VALUE = 2",
    )
    assert plain(impacts) == {
        "tests/deep/test_x.py::test_x": Impact(
            1, "uses conftest.py, which imports pkg/fixtures_support.py (changed)"
        )
    }


# ----------------------------------------------------------------------------- levels

PROJECT: dict[str, str | bytes] = {
    "src/pkg/__init__.py": "",
    "src/pkg/mod.py": """
        import os


        def inner(x):
            return x + 1


        def outer(x):
            return inner(x) * 2


        def other(x):
            # a comment
            return os.path.join("a", str(x))


        class Box:
            def __init__(self, v):
                self.v = v

            def get(self):
                return self.v
    """,
    "src/pkg/unrelated.py": "def join(*parts):\n    return parts\n",
    "tests/conftest.py": """
        import pytest
        from pkg.mod import inner


        @pytest.fixture
        def value():
            return inner(1)
    """,
    "tests/test_mod.py": """
        from pkg.mod import Box, inner, other, outer


        def test_inner():
            assert inner(1) == 2


        def test_outer():
            assert outer(1) == 4


        def test_other():
            assert other(1)


        def test_with_fixture(value):
            assert value == 2


        class TestBox:
            def test_get(self):
                assert Box(1).get() == 1

            @staticmethod
            def helper():
                return 1
    """,
    "tests/test_unrelated.py": """
        import os

        from pkg.unrelated import join


        def test_join():
            assert join("a") == ("a",)


        def test_path():
            assert os.path.join("a", "b") == "".join(["a/", "b"])
    """,
}
TESTS = ["tests/test_mod.py", "tests/test_unrelated.py"]
IDS = [
    "tests/test_mod.py::test_inner",
    "tests/test_mod.py::test_outer",
    "tests/test_mod.py::test_other",
    "tests/test_mod.py::test_with_fixture",
    "tests/test_mod.py::TestBox::test_get",
    "tests/test_unrelated.py::test_join",
    "tests/test_unrelated.py::test_path",
]


def test_a_changed_function_ranks_its_callers_direct_and_importers_indirect(
    tmp_path: Path,
) -> None:
    write(tmp_path, PROJECT)
    changes, impacts = run_after_edit(
        tmp_path, TESTS, IDS, "src/pkg/mod.py", "return x + 1", "return x + 2"
    )
    assert changes.files == {"src/pkg/mod.py"}
    assert changes.definitions == {"src/pkg/mod.py": frozenset({"inner"})}
    assert plain(impacts) == {
        "tests/test_mod.py::test_inner": Impact(2, "calls inner, changed in src/pkg/mod.py"),
        # a caller chain: the test calls outer, outer calls the changed inner
        "tests/test_mod.py::test_outer": Impact(
            2, "calls outer, which reaches inner, changed in src/pkg/mod.py"
        ),
        # a fixture requested by argument name calls it
        "tests/test_mod.py::test_with_fixture": Impact(
            2, "uses fixture value, which reaches inner, changed in src/pkg/mod.py"
        ),
        "tests/test_mod.py::test_other": Impact(1, "imports src/pkg/mod.py (changed)"),
        "tests/test_mod.py::TestBox::test_get": Impact(1, "imports src/pkg/mod.py (changed)"),
        # tests/conftest.py imports pkg.mod: every test below it can reach the change
        "tests/test_unrelated.py::test_join": Impact(
            1, "uses tests/conftest.py, which imports src/pkg/mod.py (changed)"
        ),
        "tests/test_unrelated.py::test_path": Impact(
            1, "uses tests/conftest.py, which imports src/pkg/mod.py (changed)"
        ),
    }


def test_a_changed_method_and_a_changed_constructor(tmp_path: Path) -> None:
    write(tmp_path, PROJECT)
    changes, impacts = run_after_edit(
        tmp_path, TESTS, IDS, "src/pkg/mod.py", "return self.v", "return self.v or 0"
    )
    assert changes.definitions == {"src/pkg/mod.py": frozenset({"Box.get"})}
    assert plain(impacts)["tests/test_mod.py::TestBox::test_get"] == Impact(
        2, "calls get, changed in src/pkg/mod.py"
    )
    assert impacts["tests/test_mod.py::test_inner"].level == 1
    # __init__ runs on Box(...): the class name counts as changed
    _, impacts = run_after_edit(
        tmp_path, TESTS, IDS, "src/pkg/mod.py", "self.v = v", "self.v = int(v)"
    )
    assert plain(impacts)["tests/test_mod.py::TestBox::test_get"] == Impact(
        2, "calls Box, changed in src/pkg/mod.py"
    )


def test_stdlib_attributes_and_string_methods_are_not_the_projects_names(
    tmp_path: Path,
) -> None:
    write(tmp_path, PROJECT)
    _, impacts = run_after_edit(
        tmp_path, TESTS, IDS, "src/pkg/unrelated.py", "return parts", "return tuple(parts)"
    )
    # test_path names os.path.join and "".join, not the changed pkg.unrelated.join
    assert plain(impacts) == {
        "tests/test_unrelated.py::test_join": Impact(
            2, "calls join, changed in src/pkg/unrelated.py"
        ),
        "tests/test_unrelated.py::test_path": Impact(1, "imports src/pkg/unrelated.py (changed)"),
    }


def test_a_class_attribute_naming_the_change_makes_the_class_tests_direct(
    tmp_path: Path,
) -> None:
    """more-itertools' RunningWindowSizeTests keeps the functions it checks in a class
    attribute and reads them through ``self``: its tests run the changed function."""
    write(
        tmp_path,
        {
            "pkg/__init__.py": "from .recipes import *\n",
            "pkg/recipes.py": """
                def running_mean(xs):
                    return xs


                def other():
                    return 0
            """,
            "tests/test_recipes.py": """
                from unittest import TestCase

                import pkg as mi


                class WindowTests(TestCase):
                    functions = (mi.running_mean,)

                    def test_each(self):
                        for function in self.functions:
                            function([1])


                class OtherTests(TestCase):
                    def test_other(self):
                        mi.other()
            """,
        },
    )
    ids = [
        "tests/test_recipes.py::WindowTests::test_each",
        "tests/test_recipes.py::OtherTests::test_other",
    ]
    _, impacts = run_after_edit(
        tmp_path, ["tests/test_recipes.py"], ids, "pkg/recipes.py", "return xs", "return xs[1:]"
    )
    assert {i: v.level for i, v in impacts.items()} == {ids[0]: 2, ids[1]: 1}


def test_module_attribute_calls_of_project_modules_count(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/mod.py": "def f():\n    return 1\n",
            "tests/test_attr.py": """
                import pkg.mod
                import pkg.mod as alias


                def test_dotted():
                    assert pkg.mod.f() == 1


                def test_alias():
                    assert alias.f() == 1
            """,
        },
    )
    _, impacts = run_after_edit(
        tmp_path,
        ["tests/test_attr.py"],
        ["tests/test_attr.py::test_dotted", "tests/test_attr.py::test_alias"],
        "pkg/mod.py",
        "return 1",
        "return 2",
    )
    assert {i: v.level for i, v in impacts.items()} == {
        "tests/test_attr.py::test_dotted": 2,
        "tests/test_attr.py::test_alias": 2,
    }


def test_a_changed_fixture_reaches_the_tests_that_request_it(tmp_path: Path) -> None:
    write(tmp_path, PROJECT)
    changes, impacts = run_after_edit(
        tmp_path, TESTS, IDS, "tests/conftest.py", "return inner(1)", "return inner(1) + 0"
    )
    assert changes.definitions == {"tests/conftest.py": frozenset({"value"})}
    assert plain(impacts)["tests/test_mod.py::test_with_fixture"] == Impact(
        2, "uses fixture value, changed in tests/conftest.py"
    )
    assert plain(impacts)["tests/test_mod.py::test_inner"] == Impact(
        1, "uses tests/conftest.py (changed)"
    )
    assert impacts["tests/test_unrelated.py::test_join"].level == 1


def test_a_changed_test_body_is_its_own_code(tmp_path: Path) -> None:
    write(tmp_path, PROJECT)
    changes, impacts = run_after_edit(
        tmp_path, TESTS, IDS, "tests/test_mod.py", "assert other(1)", "assert other(2)"
    )
    assert changes.definitions == {"tests/test_mod.py": frozenset({"test_other"})}
    assert plain(impacts) == {
        "tests/test_mod.py::test_other": Impact(2, "its own code changed"),
        "tests/test_mod.py::test_inner": Impact(1, "its file changed"),
        "tests/test_mod.py::test_outer": Impact(1, "its file changed"),
        "tests/test_mod.py::test_with_fixture": Impact(1, "its file changed"),
        "tests/test_mod.py::TestBox::test_get": Impact(1, "its file changed"),
    }


def test_a_changed_test_method_and_parametrised_ids(tmp_path: Path) -> None:
    write(tmp_path, PROJECT)
    ids = [
        "tests/test_mod.py::TestBox::test_get[a::b-1]",
        "tests/test_mod.py::TestBox::test_get[2]",
        "tests/test_mod.py::test_inner[x]",
    ]
    _, impacts = run_after_edit(
        tmp_path, TESTS, ids, "tests/test_mod.py", "Box(1).get() == 1", "Box(2).get() == 2"
    )
    assert plain(impacts) == {
        "tests/test_mod.py::TestBox::test_get[a::b-1]": Impact(2, "its own code changed"),
        "tests/test_mod.py::TestBox::test_get[2]": Impact(2, "its own code changed"),
        "tests/test_mod.py::test_inner[x]": Impact(1, "its file changed"),
    }


def test_comments_blank_lines_and_moves_change_no_definition(tmp_path: Path) -> None:
    write(tmp_path, PROJECT)
    changes, impacts = run_after_edit(
        tmp_path,
        TESTS,
        IDS,
        "src/pkg/mod.py",
        "    # a comment\n",
        "    # another comment, and a blank line\n\n",
    )
    assert changes.files == {"src/pkg/mod.py"}
    assert changes.definitions == {"src/pkg/mod.py": frozenset()}
    assert impacts == {}
    # Moving a function elsewhere in the file is no change either.
    mod = tmp_path / "src/pkg/mod.py"
    text = mod.read_text(encoding="utf-8")
    block = "def inner(x):\n    return x + 1\n\n\n"
    moved = text.replace(block, "") + "\n\n" + block
    cache = tmp_path.parent / f"{tmp_path.name}-cache.json"
    before = scanned(tmp_path, TESTS, cache)
    stored = before.digests
    before.save()
    mod.write_text(moved, encoding="utf-8")
    after = scanned(tmp_path, TESTS, cache)
    assert after.changes(stored).definitions == {"src/pkg/mod.py": frozenset()}


def test_name_matched_tests_are_indirect(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/parser.py": "def parse():\n    return 1\n",
            "tests/test_parser.py": "def test_cli():\n    pass\n",
            "tests/test_misc.py": """
                def test_parser_roundtrip():
                    pass

                def test_x():
                    pass
            """,
            "tests/test_uses.py": "import pkg.parser\n\ndef test_uses():\n    pass\n",
        },
    )
    tests = ["tests/test_parser.py", "tests/test_misc.py", "tests/test_uses.py"]
    ids = [
        "tests/test_parser.py::test_cli",
        "tests/test_misc.py::test_parser_roundtrip",
        "tests/test_misc.py::test_x",
        "tests/test_uses.py::test_uses",
    ]
    _, impacts = run_after_edit(tmp_path, tests, ids, "pkg/parser.py", "return 1", "return 2")
    assert plain(impacts) == {
        "tests/test_parser.py::test_cli": Impact(1, "named after pkg/parser.py (changed)"),
        "tests/test_misc.py::test_parser_roundtrip": Impact(
            1, "named after pkg/parser.py (changed)"
        ),
        "tests/test_uses.py::test_uses": Impact(1, "imports pkg/parser.py (changed)"),
    }


# ----------------------------------------------------------------------------- changes and cache


def test_nothing_is_changed_when_nothing_was_stored(tmp_path: Path) -> None:
    write(tmp_path, PROJECT)
    index = scanned(tmp_path, TESTS)
    assert index.changes({}) == ChangeSet(frozenset(), {})
    assert index.impacts(index.changes({}), IDS) == {}
    assert index.changes(index.digests).files == frozenset()


def test_a_new_file_is_changed_with_all_its_definitions(tmp_path: Path) -> None:
    write(tmp_path, PROJECT)
    stored = scanned(tmp_path, TESTS).digests
    write(tmp_path, {"tests/test_new.py": "def test_new():\n    pass\n"})
    index = scanned(tmp_path, [*TESTS, "tests/test_new.py"])
    changes = index.changes(stored)
    assert changes.files == {"tests/test_new.py"}
    assert changes.definitions == {"tests/test_new.py": frozenset({"test_new"})}
    assert index.impacts(changes, [*IDS, "tests/test_new.py::test_new"]) == {
        "tests/test_new.py::test_new": Impact(2, "its own code changed")
    }


def test_the_cache_round_trips_and_without_it_definitions_are_unknown(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write(project, PROJECT)
    cache = tmp_path / "cache" / "impact.json"
    first = scanned(project, TESTS, cache)
    stored = first.digests
    first.save()
    assert json.loads(cache.read_text(encoding="utf-8"))["version"] == impact_module.CACHE_VERSION
    edit(project, "src/pkg/mod.py", "return x + 1", "return x + 3")
    calls = 0
    original = impact_module._extract

    def counting(data: bytes) -> impact_module._Facts:
        nonlocal calls
        calls += 1
        return original(data)

    impact_module._extract = counting
    try:
        second = scanned(project, TESTS, cache)
    finally:
        impact_module._extract = original
    assert calls == 1  # only the edited file is parsed again: the rest comes from the cache
    assert second.changes(stored).definitions == {"src/pkg/mod.py": frozenset({"inner"})}
    # Without the old version's facts the change is the whole file: importers are indirect.
    blind = scanned(project, TESTS)
    changes = blind.changes(stored)
    assert changes.definitions == {"src/pkg/mod.py": None}
    impacts = blind.impacts(changes, IDS)
    assert {i: v.level for i, v in impacts.items()} == {
        "tests/test_mod.py::test_inner": 1,
        "tests/test_mod.py::test_outer": 1,
        "tests/test_mod.py::test_other": 1,
        "tests/test_mod.py::test_with_fixture": 1,
        "tests/test_mod.py::TestBox::test_get": 1,
        "tests/test_unrelated.py::test_join": 1,  # through tests/conftest.py
        "tests/test_unrelated.py::test_path": 1,
    }


def test_the_cache_keeps_the_previous_version_and_prunes_the_rest(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write(project, PROJECT)
    cache = tmp_path / "impact.json"
    first = scanned(project, TESTS, cache)
    stored = first.digests  # the last run that recorded digests
    first.save()
    edit(project, "src/pkg/mod.py", "return x + 1", "return x + 3")
    scanned(project, TESTS, cache).save()  # a run that recorded nothing
    edit(project, "src/pkg/mod.py", "return x + 3", "return x + 4")
    third = scanned(project, TESTS, cache)
    assert third.changes(stored).definitions == {"src/pkg/mod.py": frozenset({"inner"})}
    third.save()
    # Dropping a test file prunes the facts of the files only it reached.
    only = scanned(project, ["tests/test_unrelated.py"], cache)
    only.save()
    kept = json.loads(cache.read_text(encoding="utf-8"))
    assert set(kept["paths"]) == set(only.digests)
    assert set(kept["facts"]) >= set(only.digests.values())
    assert len(kept["facts"]) <= 2 * len(only.digests) + 1


def test_changes_between_two_earlier_runs(tmp_path: Path) -> None:
    """What differed between the code of two earlier episodes, by the kept versions."""
    project = tmp_path / "project"
    write(project, PROJECT)
    cache = tmp_path / "impact.json"
    scanned(project, TESTS, cache).save(1)
    edit(project, "src/pkg/mod.py", "return x + 1", "return x + 2")
    scanned(project, TESTS, cache).save(2)
    edit(project, "src/pkg/mod.py", "return x + 2", "return x + 1")  # back as in 1
    edit(project, "src/pkg/unrelated.py", "return parts", "return parts[::-1]")
    scanned(project, TESTS, cache).save(3)
    now = scanned(project, TESTS, cache)
    assert now.changes_between(1, 2) == ChangeSet(
        frozenset({"src/pkg/mod.py"}), {"src/pkg/mod.py": frozenset({"inner"})}
    )
    assert now.changes_between(2, 3).definitions == {
        "src/pkg/mod.py": frozenset({"inner"}),
        "src/pkg/unrelated.py": frozenset({"join"}),
    }
    assert now.changes_between(1, 1) == ChangeSet(frozenset(), {})
    # a file first seen after both episodes is no change between them; one first seen in
    # between makes the answer unknown
    write(project, {"src/pkg/late.py": "def late():\n    return 1\n"})
    edit(project, "tests/test_mod.py", "import", "import pkg.late\nimport")
    scanned(project, TESTS, cache).save(4)
    later = scanned(project, TESTS, cache)
    assert later.changes_between(1, 2).files == {"src/pkg/mod.py"}
    assert later.changes_between(3, 4) is None


def test_changes_between_runs_older_than_the_kept_versions_are_unknown(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write(project, PROJECT)
    cache = tmp_path / "impact.json"
    for episode in range(1, impact_module.KEPT_VERSIONS + 3):
        edit(project, "src/pkg/mod.py", "return ", f"return {episode} + ")
        scanned(project, TESTS, cache).save(episode)
    index = scanned(project, TESTS, cache)
    last = impact_module.KEPT_VERSIONS + 2
    assert index.changes_between(last - 1, last) is not None
    assert index.changes_between(1, 2) is None  # mod.py's versions then are pruned


@pytest.mark.parametrize(
    "content",
    [b"\x00\x01garbage", b"[1, 2, 3]", b'{"version": 1, "facts": {"x": 3}, "memo": 7}', b"{"],
)
def test_a_corrupt_or_alien_cache_is_ignored(tmp_path: Path, content: bytes) -> None:
    project = tmp_path / "project"
    write(project, PROJECT)
    cache = tmp_path / "impact.json"
    cache.write_bytes(content)
    index = scanned(project, TESTS, cache)
    assert "src/pkg/mod.py" in index.digests
    index.save()
    assert json.loads(cache.read_text(encoding="utf-8"))["version"] == impact_module.CACHE_VERSION


def test_malformed_cached_facts_count_as_unknown(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write(project, PROJECT)
    cache = tmp_path / "impact.json"
    first = scanned(project, TESTS, cache)
    stored = first.digests
    first.save()
    data = json.loads(cache.read_text(encoding="utf-8"))
    for facts in data["facts"].values():
        for key in list(facts["defs"]):
            facts["defs"][key] = [1, 2]
    cache.write_text(json.dumps(data), encoding="utf-8")
    edit(project, "src/pkg/mod.py", "return x + 1", "return x + 3")
    index = scanned(project, TESTS, cache)
    changes = index.changes(stored)
    assert changes.definitions == {"src/pkg/mod.py": None}
    assert index.impacts(changes, IDS)["tests/test_mod.py::test_inner"].level == 1


def test_unchanged_files_are_not_read_again(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write(project, PROJECT)
    old = time.time() - 3600
    for path in project.rglob("*.py"):
        os.utime(path, (old, old))
    cache = tmp_path / "impact.json"
    scanned(project, TESTS, cache).save()
    memo = json.loads(cache.read_text(encoding="utf-8"))["memo"]
    assert set(memo) == {
        "tests/test_mod.py",
        "tests/test_unrelated.py",
        "tests/conftest.py",
        "src/pkg/__init__.py",
        "src/pkg/mod.py",
        "src/pkg/unrelated.py",
    }
    # A file whose (mtime, size) is unchanged is not read again: even a same-size edit
    # with its mtime put back keeps the memoised digest (the trade-off every mtime cache makes).
    digest = scanned(project, TESTS, cache).digests["src/pkg/mod.py"]
    edit(project, "src/pkg/mod.py", "return x + 1", "return x + 9")
    os.utime(project / "src/pkg/mod.py", (old, old))
    assert scanned(project, TESTS, cache).digests["src/pkg/mod.py"] == digest
    # A fresh edit (new mtime) is read.
    edit(project, "src/pkg/mod.py", "return x + 9", "return x + 8")
    assert scanned(project, TESTS, cache).digests["src/pkg/mod.py"] != digest


def test_unparsable_files_get_a_digest_and_no_facts(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write(
        project,
        {
            "pkg/__init__.py": "",
            "pkg/broken.py": "def f(:\n",
            "pkg/nul.py": b"x = 1\x00\n",
            "pkg/latin.py": b"# -*- coding: utf-8 -*-\nname = '\xff\xfe'\n",
            "pkg/escape.py": 'PATTERN = "\\d+"\n',
            "tests/test_broken.py": """
                import pkg.broken
                import pkg.nul
                import pkg.latin
                import pkg.escape


                def test_x():
                    pass
            """,
        },
    )
    tests = ["tests/test_broken.py"]
    cache = tmp_path / "impact.json"
    index = scanned(project, tests, cache)
    assert {"pkg/broken.py", "pkg/nul.py", "pkg/latin.py", "pkg/escape.py"} <= set(index.digests)
    stored = index.digests
    index.save()
    # A test file broken mid-edit keeps following the imports of its last good version.
    edit(project, "tests/test_broken.py", "def test_x():", "def test_x(:")
    write(project, {"pkg/broken.py": "def f(:\n    pass\n"})
    again = scanned(project, tests, cache)
    assert set(again.digests) == set(stored)
    changes = again.changes(stored)
    assert changes.files == {"pkg/broken.py", "tests/test_broken.py"}
    assert changes.definitions == {"pkg/broken.py": None, "tests/test_broken.py": None}
    assert again.impacts(changes, ["tests/test_broken.py::test_x"]) == {
        "tests/test_broken.py::test_x": Impact(1, "its file changed")
    }
    # Without a cache nothing is known of it but its digest.
    blind = scanned(project, tests)
    assert set(blind.digests) == {"tests/test_broken.py"}


def test_missing_files_and_ids_outside_the_scan_are_skipped(tmp_path: Path) -> None:
    write(tmp_path, PROJECT)
    index = scanned(tmp_path, [*TESTS, "tests/test_gone.py"])
    assert "tests/test_gone.py" not in index.digests
    stored = dict(index.digests, **{"src/pkg/mod.py": "0" * 64})
    changes = index.changes(stored)
    ids = ["tests/test_gone.py::test_x", "README.rst::doc", "tests", "other.py::test_x"]
    assert index.impacts(changes, ids) == {}


def test_wrong_arguments_are_programming_errors(tmp_path: Path) -> None:
    index = DependencyIndex(tmp_path)
    with pytest.raises(RuntimeError):
        index.changes({})
    with pytest.raises(TypeError):
        index.scan("tests/test_x.py")
    with pytest.raises(TypeError):
        index.scan([Path("tests/test_x.py")])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        index.scan(["/abs/test_x.py"])
    with pytest.raises(ValueError):
        index.scan(["../outside/test_x.py"])
    index.scan([])
    with pytest.raises(TypeError):
        index.changes([("a", "b")])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        index.impacts((frozenset(), {}), [])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        index.impacts(ChangeSet(frozenset(), {}), "tests/test_x.py::test")


def test_save_ignores_an_unwritable_cache(tmp_path: Path) -> None:
    write(tmp_path / "project", PROJECT)
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    index = scanned(tmp_path / "project", TESTS, blocker / "sub" / "impact.json")
    index.save()  # the parent "directory" is a file: nothing written, nothing raised
    assert not (tmp_path / "file" / "sub").exists()


CHAIN = {
    "pkg/__init__.py": "",
    "pkg/core.py": """
        class Box:
            def __getstate__(self):
                return 1

            def describe(self):
                return self.__doc__

        def make():
            return Box()

        def wrap():
            return make()

        def outer():
            return wrap()

        def documented():
            return documented.__doc__
        """,
    "tests/test_core.py": """
        from pkg.core import Box, documented, make, outer, wrap

        def test_box():
            assert Box()

        def test_make():
            assert make()

        def test_wrap():
            assert wrap()

        def test_outer():
            assert outer()

        def test_documented():
            assert documented()
        """,
}
CHAIN_IDS = [
    f"tests/test_core.py::test_{name}" for name in ("box", "make", "wrap", "outer", "documented")
]


def test_callers_further_up_a_chain_are_indirect_with_their_distance(tmp_path: Path) -> None:
    write(tmp_path, CHAIN)
    _, impacts = run_after_edit(
        tmp_path, ["tests/test_core.py"], CHAIN_IDS, "pkg/core.py", "return 1", "return 2"
    )
    # a changed dunder is called by its class's name (pickle calls __getstate__ on a Box),
    # not by its own: code naming __doc__ is not affected by it
    assert impacts["tests/test_core.py::test_box"].level == 2
    assert impacts["tests/test_core.py::test_make"].level == 2  # make names Box: one call away
    wrap = impacts["tests/test_core.py::test_wrap"]
    assert (wrap.level, wrap.calls) == (1, 2)  # two calls away: nearer than an import
    outer = impacts["tests/test_core.py::test_outer"]
    assert (outer.level, outer.calls) == (1, 3)
    documented = impacts["tests/test_core.py::test_documented"]
    assert (documented.level, documented.calls) == (1, 0)  # it only imports the module


NEAR = {
    "pkg/__init__.py": "",
    "pkg/core.py": """
        def bind(x):
            return x + 1

        def curry(x):
            return bind(x)

        def other(x):
            return x
    """,
    "tests/test_core.py": """
        from pkg.core import bind, curry, other

        def test_bind():
            assert bind(1) == 2

        def test_curry():
            assert curry(1) == 2

        def test_wrapper():
            assert curry(2) == 3

        def test_other():
            assert other(1) == 1
    """,
    "tests/test_misc.py": """
        from pkg.core import curry

        def test_misc():
            assert curry(1)
    """,
}


def test_proximity_orders_the_tests_of_one_level_calls_then_names_then_files(
    tmp_path: Path,
) -> None:
    write(tmp_path, NEAR)
    ids = [f"tests/test_core.py::test_{name}" for name in ("bind", "curry", "wrapper", "other")] + [
        "tests/test_misc.py::test_misc"
    ]
    _, impacts = run_after_edit(
        tmp_path,
        ["tests/test_core.py", "tests/test_misc.py"],
        ids,
        "pkg/core.py",
        "return x + 1",
        "return x + 2",
    )
    near = {node_id.rpartition("::")[2]: found.proximity for node_id, found in impacts.items()}
    levels = {node_id.rpartition("::")[2]: found.level for node_id, found in impacts.items()}
    assert levels == {
        "test_bind": 2,
        "test_curry": 2,
        "test_wrapper": 2,
        "test_misc": 2,
        "test_other": 1,
    }
    # calls bind itself; calls curry (one call away) and is named after it; calls curry,
    # unnamed, in the file named after the module; the same in another file
    assert near["test_bind"] < near["test_curry"] < near["test_wrapper"] < near["test_misc"]
    assert near == {
        # named after the changed definition itself: closer than named after a caller
        "test_bind": impact_module.proximity(0, impact_module.NAMED_CHANGE, True),
        "test_curry": impact_module.proximity(1, impact_module.NAMED_CALLER, True),
        "test_wrapper": impact_module.proximity(1, False, True),
        "test_misc": impact_module.proximity(1, False, False),
        # only imports: farther than any call (its own class; the scale is one for all)
        "test_other": impact_module.proximity(impact_module.IMPORT_DISTANCE, False, True),
    }


def test_a_test_named_after_the_changed_method_is_nearest_in_its_class(tmp_path: Path) -> None:
    """``numeric_range.__eq__`` changes: every test naming the class reaches it; the one
    named after the method (``test_eq``) is nearest, those of the class named after it
    (``NumericRangeTests``) next, the rest after."""
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/ranges.py": """
                class numeric_range:
                    def __init__(self, n):
                        self.n = n

                    def __eq__(self, other):
                        return self.n == other.n
            """,
            "tests/test_ranges.py": """
                import unittest
                from pkg.ranges import numeric_range

                class NumericRangeTests(unittest.TestCase):
                    def test_eq(self):
                        self.assertEqual(numeric_range(1), numeric_range(1))

                    def test_basic(self):
                        self.assertEqual(numeric_range(2).n, 2)

                class OtherTests(unittest.TestCase):
                    def test_uses_it(self):
                        self.assertTrue(numeric_range(3))
            """,
        },
    )
    ids = [
        "tests/test_ranges.py::NumericRangeTests::test_eq",
        "tests/test_ranges.py::NumericRangeTests::test_basic",
        "tests/test_ranges.py::OtherTests::test_uses_it",
    ]
    _, impacts = run_after_edit(
        tmp_path,
        ["tests/test_ranges.py"],
        ids,
        "pkg/ranges.py",
        "self.n == other",
        "self.n != other",
    )
    near = [impacts[node_id].proximity for node_id in ids]
    assert all(impacts[node_id].level == 2 for node_id in ids)
    assert near == [
        impact_module.proximity(0, impact_module.NAMED_CHANGE, True),
        impact_module.proximity(0, impact_module.NAMED_CALLER, True),
        impact_module.proximity(0, impact_module.UNNAMED, True),
    ]


@pytest.mark.parametrize(
    ("qual", "names", "named"),
    [
        ("NthProductTests.test_basic", ("nth_product",), True),  # CamelCase, snake case
        ("SeekableTest.test_peek", ("seekable",), True),
        ("HTTPServerTests.test_get", ("http_server",), True),
        ("NumericRangeTests.test_eq", ("eq",), True),  # the word of __eq__
        ("test_curry_bind", ("bind",), True),
        ("TestCurry.test_kwargs", ("curry",), True),
        ("test_currying", ("curry",), False),  # a word, not a prefix
        ("test_merge", ("_merge_",), True),
        ("test_other", ("bind", "curry"), False),
    ],
)
def test_a_test_is_named_after_a_definition_by_a_word_of_its_name(
    qual: str, names: tuple[str, ...], named: bool
) -> None:
    assert impact_module._names_any(qual, names) is named
