"""``qlearn import-junit``: warm-start a project from CI history in JUnit XML files.

Each file is one run. The files are learned from oldest first (by the ``timestamp`` of their
first ``<testsuite>``, else by file modification time), each through
:class:`~pytest_qlearn.session.LearningSession` exactly as the plugin (and the replay) learns:
load the snapshot, rank the tests, take their outcomes in the learned order, learn, write one
episode. A file's session id is the hash of its content, so importing it again changes nothing.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..agents import prioritizer as prio
from ..engine.history import FAILED, PASSED, SKIPPED
from ..session import LearningSession, TestResult, default_registry
from ..store.base import DEFAULT_TTL_DAYS, Partition, Store
from .data import InspectorError


@dataclass(frozen=True)
class JunitTest:
    test_id: str
    verdict: str
    duration: float


@dataclass(frozen=True)
class JunitRun:
    path: Path
    started_at: float
    digest: str
    tests: list[JunitTest]

    @property
    def session_id(self) -> str:
        return f"junit-{self.digest[:32]}"

    @property
    def seed(self) -> int:
        return int(self.digest[32:47], 16)  # 60 bits: a store keeps signed 64-bit seeds


def test_id(classname: str, name: str, root: Path) -> str:
    """pytest's node id from JUnit's ``classname`` (``pkg.test_mod.TestClass``) and ``name``:
    the longest dotted prefix that is a file under ``root`` is the module; without one, the
    module ends before the first part named ``Test...`` (pytest's class convention)."""
    parts = [p for p in classname.split(".") if p]
    if not parts:
        return name
    split = None
    for k in range(len(parts), 0, -1):
        if (root / Path(*parts[:k])).with_suffix(".py").is_file():
            split = k
            break
    if split is None:
        split = next((k for k, p in enumerate(parts) if p.startswith("Test") and k), len(parts))
    module = "/".join(parts[:split]) + ".py"
    return "::".join([module, *parts[split:], name])


def _timestamp(text: str | None, path: Path) -> float:
    if text:
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            raise InspectorError(f"{path}: timestamp {text!r} is not ISO 8601") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    return path.stat().st_mtime


def parse(path: Path, root: Path) -> JunitRun:
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise InspectorError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        tree = ET.fromstring(content)
    except ET.ParseError as exc:
        raise InspectorError(f"{path} is not XML: {exc}") from None
    suites = [tree] if tree.tag == "testsuite" else list(tree.iter("testsuite"))
    if tree.tag not in ("testsuite", "testsuites") or not suites:
        raise InspectorError(f"{path} is not JUnit XML (no <testsuite>)")
    folded: dict[str, JunitTest] = {}
    for case in tree.iter("testcase"):
        name = case.get("name")
        if not name:
            raise InspectorError(f"{path}: a <testcase> has no name")
        tid = test_id(case.get("classname", ""), name, root)
        verdict = PASSED
        if case.find("failure") is not None or case.find("error") is not None:
            verdict = FAILED
        elif case.find("skipped") is not None:
            verdict = SKIPPED
        try:
            duration = max(0.0, float(case.get("time") or 0.0))
        except ValueError:
            raise InspectorError(
                f"{path}: {tid}: time {case.get('time')!r} is not a number"
            ) from None
        held = folded.get(tid)
        if held is not None:  # reported twice (reruns): a failure counts, durations add up
            verdict = FAILED if FAILED in (held.verdict, verdict) else verdict
            duration += held.duration
        folded[tid] = JunitTest(tid, verdict, duration)
    if not folded:
        raise InspectorError(f"{path} holds no test cases")
    return JunitRun(
        path,
        _timestamp(suites[0].get("timestamp"), path),
        hashlib.sha256(content).hexdigest(),
        list(folded.values()),
    )


def _ref(index: int, tid: str) -> prio.TestRef:
    """As the plugin groups a node id for fixture locality: module, and class if any."""
    parts = tid.split("[", 1)[0].split("::")
    return prio.TestRef(tid, parts[0], "::".join(parts[:-1]) if len(parts) > 2 else None, index)


def learn(
    store: Store,
    partition: Partition,
    runs: list[JunitRun],
    changes: Mapping[str, float | int] | None = None,
    ttl_days: float = DEFAULT_TTL_DAYS,
) -> list[dict[str, Any]]:
    """Learn from ``runs`` oldest first, with the project's hyperparameters (``changes``:
    field name -> value over each agent's own defaults, as the ini values do); returns what
    happened to each."""
    out = []
    for run in sorted(runs, key=lambda r: (r.started_at, str(r.path))):
        snapshot = store.load_snapshot(partition, [prio.NAME])
        session = LearningSession(
            snapshot,
            seed=run.seed,
            registry=default_registry(changes=changes),
            session_id=run.session_id,
        )
        refs = [_ref(i, t.test_id) for i, t in enumerate(run.tests)]
        ranking = session.rank(refs)
        by_id = {t.test_id: t for t in run.tests}
        results = []
        for position, ref in enumerate(ranking.order):
            test = by_id[ref.test_id]
            decision = ranking.decisions[ref.test_id]
            results.append(
                TestResult(
                    test.test_id,
                    test.verdict,
                    test.duration,
                    ref.index,
                    position,
                    decision.tier,
                    decision.explored,
                )
            )
        failures = sum(t.verdict == FAILED for t in run.tests)
        write, _ = session.finish(
            results,
            started_at=run.started_at,
            duration=sum(t.duration for t in run.tests),
            exit_status=1 if failures else 0,
            riskiest=0,
        )
        imported = store.write_episode(write, ttl_days=ttl_days)
        out.append(
            {
                "file": str(run.path),
                "session_id": run.session_id,
                "started_at": run.started_at,
                "tests": len(run.tests),
                "failures": failures,
                "apfd": write.session.apfd if imported else None,
                "imported": imported,
            }
        )
    return out
