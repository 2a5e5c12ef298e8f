"""Loading CI histories: RETECS/COLEMAN (BuildId or Cycle, with or without LastResults) and
Commons, and a one-line DatasetError for every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_qlearn.replay.datasets import DatasetError, TestRun, detect_format, load

RETECS_HEADER = "Id;Name;BuildId;Duration;CalcPrio;LastRun;Verdict;Cycle;LastResults"
COMMONS_HEADER = (
    "test_class_name,cycle_id,tests,failures_0,failures_1,failures_2,failures_3,"
    "current_failures,failures_%,time_0,time,time_since,AvgCyclomatic"
)


def write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def runs(cycle_tests: list[TestRun]) -> list[tuple[str, float, bool]]:
    return [(t.test_id, t.duration, t.failed) for t in cycle_tests]


# -- RETECS / COLEMAN ------------------------------------------------------------------------


def test_retecs_by_build_id_groups_builds_sorts_numerically_and_orders_rows_by_id(
    tmp_path: Path,
) -> None:
    # build 10 appears before build 2 in the file but runs after it (numeric, not text or
    # file order), rows are not in Id order within build 1
    path = write(
        tmp_path,
        "dune.csv",
        [
            RETECS_HEADER,
            "2;b;1;0.5;0;2020-01-01 00:00;1;1;[]",
            "1;a;1;1.5;0;2020-01-01 00:00;0;1;[]",
            "4;c;10;2.0;0;2020-01-04 00:00;1;4;[]",
            "3;a;2;1.0;0;2020-01-02 00:00;0;2;[]",
            "5;b;2;0.25;0;2020-01-02 00:00;0;3;[]",
        ],
    )
    data = load(path)
    assert data.format == "retecs"
    assert data.cycle_key == "BuildId"
    assert [c.cycle_id for c in data.cycles] == ["1", "2", "10"]
    assert runs(data.cycles[0].tests) == [("a", 1.5, False), ("b", 0.5, True)]
    assert runs(data.cycles[1].tests) == [("a", 1.0, False), ("b", 0.25, False)]
    assert runs(data.cycles[2].tests) == [("c", 2.0, True)]
    assert data.rows == 5
    assert data.failing_cycles == 2
    assert data.tests == 3
    # every LastResults is "[]": nothing to use, history is rebuilt from earlier cycles
    assert not data.has_last_results
    assert all(c.last_results is None for c in data.cycles)


def test_retecs_by_cycle_with_last_results(tmp_path: Path) -> None:
    # the classic RETECS layout: no BuildId, LastResults filled (most recent first)
    path = write(
        tmp_path,
        "paintcontrol.csv",
        [
            "Id;Name;Duration;CalcPrio;LastRun;NumRan;NumErrors;Verdict;Cycle;LastResults",
            "1;t1;10;0;2016-01-01 00:00;3;1;0;1;[1, 0, 0]",
            "2;t2;20;0;2016-01-01 00:00;0;0;1;1;[]",
            "3;t1;11;0;2016-01-02 00:00;4;1;1;2;[0, 1, 0, 0]",
        ],
    )
    data = load(path)
    assert data.cycle_key == "Cycle"
    assert data.has_last_results
    first, second = data.cycles
    assert runs(first.tests) == [("t1", 10.0, False), ("t2", 20.0, True)]
    assert first.last_results == {"t1": (True, False, False), "t2": ()}
    assert runs(second.tests) == [("t1", 11.0, True)]
    assert second.last_results == {"t1": (False, True, False, False)}


def test_retecs_without_last_results_column_and_without_id(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "minimal.csv",
        ["Name;Duration;Verdict;Cycle", "x;1;0;1", "y;2;1;1", "x;1;1;2"],
    )
    data = load(path)
    assert [runs(c.tests) for c in data.cycles] == [
        [("x", 1.0, False), ("y", 2.0, True)],
        [("x", 1.0, True)],
    ]
    assert not data.has_last_results


def test_build_id_wins_over_cycle_when_both_are_present(tmp_path: Path) -> None:
    # two builds inside one Cycle value: BuildId is the CI build, so two cycles
    path = write(
        tmp_path,
        "both.csv",
        [
            RETECS_HEADER,
            "1;a;1;1;0;2020-01-01;0;7;[]",
            "2;a;2;1;0;2020-01-01;1;7;[]",
        ],
    )
    data = load(path)
    assert data.cycle_key == "BuildId"
    assert len(data.cycles) == 2


def test_a_test_repeated_in_one_cycle_is_one_run_failed_if_any_with_summed_duration(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        "dups.csv",
        [
            RETECS_HEADER,
            "1;a;1;1.0;0;2020-01-01;0;1;[]",
            "2;b;1;2.0;0;2020-01-01;1;1;[]",
            "3;a;1;0.5;0;2020-01-01;1;1;[]",
            "4;b;1;0.5;0;2020-01-01;0;1;[]",
            "5;c;1;0.5;0;2020-01-01;0;1;[]",
            "6;c;1;0.5;0;2020-01-01;0;1;[]",
        ],
    )
    data = load(path)
    assert runs(data.cycles[0].tests) == [("a", 1.5, True), ("b", 2.5, True), ("c", 1.0, False)]
    assert data.merged_rows == 3
    assert data.rows == 6


# -- Commons ---------------------------------------------------------------------------------


def test_commons_cycles_in_order_of_first_appearance(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "Commons_x.csv",
        [
            COMMONS_HEADER,
            "org/a/ATest.java,ffff01,3,0,0,0,0,0,0.0,0,0.25,0.0,1",
            "org/a/BTest.java,ffff01,5,0,0,0,0,2,0.0,0,1.5,0.0,1",
            "org/a/ATest.java,0aaa02,3,0,0,0,0,1,0.0,0,0.5,0.0,1",
        ],
    )
    data = load(path)
    assert data.format == "commons"
    assert data.cycle_key == "cycle_id"
    # commit hashes are not sortable: file order, "ffff01" first
    assert [c.cycle_id for c in data.cycles] == ["ffff01", "0aaa02"]
    assert runs(data.cycles[0].tests) == [
        ("org/a/ATest.java", 0.25, False),
        ("org/a/BTest.java", 1.5, True),  # current_failures = 2 > 0
    ]
    assert runs(data.cycles[1].tests) == [("org/a/ATest.java", 0.5, True)]
    assert not data.has_last_results


def test_commons_with_only_the_needed_columns_in_another_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.csv",
        ["time,current_failures,test_class_name,cycle_id", "0.1,0,T,c1", "0.2,1,U,c1"],
    )
    data = load(path)
    assert runs(data.cycles[0].tests) == [("T", 0.1, False), ("U", 0.2, True)]


# -- format selection ------------------------------------------------------------------------


def test_detect_format() -> None:
    assert detect_format(RETECS_HEADER) == "retecs"
    assert detect_format(COMMONS_HEADER) == "commons"
    with pytest.raises(DatasetError, match="unknown format"):
        detect_format("a,b,c")


def test_forced_format_that_does_not_match_reports_missing_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", [COMMONS_HEADER, "T,c1,1,0,0,0,0,0,0,0,0.1,0,1"])
    with pytest.raises(DatasetError, match=r"missing columns Name, Duration, Verdict"):
        load(path, "retecs")
    assert load(path, "commons").format == "commons"


def test_unknown_format_name_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", [COMMONS_HEADER])
    with pytest.raises(DatasetError, match="unknown format 'parquet'"):
        load(path, "parquet")


# -- bad input -------------------------------------------------------------------------------


def assert_one_line(exc: pytest.ExceptionInfo[DatasetError], path: Path | None = None) -> None:
    message = str(exc.value)
    assert "\n" not in message
    if path is not None:
        assert str(path) in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file") as exc:
        load(tmp_path / "nope.csv")
    assert_one_line(exc, tmp_path / "nope.csv")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="is a directory") as exc:
        load(tmp_path)
    assert_one_line(exc, tmp_path)


@pytest.mark.parametrize("content", ["", "\n\n", "   \n"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match="empty file") as exc:
        load(path)
    assert_one_line(exc, path)


@pytest.mark.parametrize("header", [RETECS_HEADER, COMMONS_HEADER])
def test_header_without_rows(tmp_path: Path, header: str) -> None:
    path = write(tmp_path, "header.csv", [header, ""])
    with pytest.raises(DatasetError, match="no data rows") as exc:
        load(path)
    assert_one_line(exc, path)


def test_unknown_format(tmp_path: Path) -> None:
    path = write(tmp_path, "other.csv", ["when,who,what", "1,2,3"])
    with pytest.raises(DatasetError, match="unknown format") as exc:
        load(path)
    assert_one_line(exc, path)


def test_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "blob.csv"
    path.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(DatasetError, match="not a UTF-8 text file") as exc:
        load(path)
    assert_one_line(exc, path)


@pytest.mark.parametrize(
    ("header", "missing"),
    [
        ("Id;Name;BuildId;CalcPrio;Verdict", "missing column Duration"),
        ("Id;Name;BuildId;Duration;Verdict_x", "unknown format"),
        ("Id;Name;Duration;Verdict", "missing column BuildId or Cycle"),
    ],
)
def test_retecs_missing_columns(tmp_path: Path, header: str, missing: str) -> None:
    width = header.count(";") + 1
    path = write(tmp_path, "r.csv", [header, ";".join(["1"] * width)])
    with pytest.raises(DatasetError, match=missing) as exc:
        load(path)
    assert_one_line(exc, path)


def test_retecs_missing_verdict_when_forced(tmp_path: Path) -> None:
    path = write(tmp_path, "r.csv", ["Id;Name;BuildId;Duration", "1;a;1;1"])
    with pytest.raises(DatasetError, match="missing column Verdict") as exc:
        load(path, "retecs")
    assert_one_line(exc, path)


def test_commons_missing_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", ["test_class_name,cycle_id,current_failures", "T,c,0"])
    with pytest.raises(DatasetError, match="missing column time") as exc:
        load(path)
    assert_one_line(exc, path)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("1;a;1;abc;0;x;0;1;[]", "line 2: Duration 'abc' is not a number"),
        ("1;a;1;nan;0;x;0;1;[]", "line 2: Duration 'nan' is not a number"),
        ("1;a;1;-1;0;x;0;1;[]", "line 2: Duration '-1' is negative"),
        ("1;a;1;1;0;x;2;1;[]", "line 2: Verdict '2' is not 0 .passed. or 1 .failed."),
        ("1;a;1;1;0;x;;1;[]", "line 2: Verdict '' is not a number"),
        ("1;;1;1;0;x;0;1;[]", "line 2: empty Name"),
        ("1;a;;1;0;x;0;1;[]", "line 2: empty BuildId"),
        ("1;a;1;1;0;x;0;1;[1, x]", "line 2: LastResults '.1, x.' is not a list"),
        ("1;a;1;1", "line 2: 4 fields, the header has 9"),
        ("z;a;1;1;0;x;0;1;[]", "line 2: Id 'z' is not a number"),
    ],
)
def test_retecs_bad_values(tmp_path: Path, row: str, message: str) -> None:
    path = write(tmp_path, "r.csv", [RETECS_HEADER, row])
    with pytest.raises(DatasetError, match=message) as exc:
        load(path)
    assert_one_line(exc, path)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("T,c,1,0,0,0,0,x,0,0,0.1,0,1", "line 2: current_failures 'x' is not a number"),
        ("T,c,1,0,0,0,0,-1,0,0,0.1,0,1", "line 2: current_failures '-1' is negative"),
        ("T,c,1,0,0,0,0,0,0,0,,0,1", "line 2: time '' is not a number"),
        (",c,1,0,0,0,0,0,0,0,0.1,0,1", "line 2: empty test_class_name"),
        ("T,,1,0,0,0,0,0,0,0,0.1,0,1", "line 2: empty cycle_id"),
        ("T,c,1", "line 2: 3 fields"),
    ],
)
def test_commons_bad_values(tmp_path: Path, row: str, message: str) -> None:
    path = write(tmp_path, "c.csv", [COMMONS_HEADER, row])
    with pytest.raises(DatasetError, match=message) as exc:
        load(path)
    assert_one_line(exc, path)
