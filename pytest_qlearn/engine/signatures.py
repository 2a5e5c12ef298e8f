"""Failure signatures: what makes two failures "the same failure", across runs and machines.

A signature is the exception type, its message with the parts that differ from run to run
masked (numbers, addresses, temporary paths, UUIDs and long hexadecimal ids), and where it
was raised (file and function, not the line: an edit above it must not make it new). Its
key is a short SHA-256 of those three. The ``flaky-hunter`` agent keys its knowledge of what
reruns did on it (the ``patterns`` table). Pure: no pytest.
"""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

#: Failure kinds, a feature of the flaky-hunter's state.
ASSERTION = "assertion"
TIMEOUT = "timeout"
CONNECTION = "connection"
OS = "os"
IMPORT = "import"
ERROR = "error"  # a programming error: KeyError, TypeError, ValueError, ...
OTHER = "other"
KINDS = (ASSERTION, TIMEOUT, CONNECTION, OS, IMPORT, ERROR, OTHER)

#: The longest normalised message kept (signatures stay readable and bounded).
MAX_MESSAGE = 200

_CONNECTION_NAMES = ("connection", "refused", "reset", "brokenpipe", "socket", "gaierror", "dns")
_OS_NAMES = {
    "oserror",
    "ioerror",
    "permissionerror",
    "filenotfounderror",
    "fileexistserror",
    "isadirectoryerror",
    "notadirectoryerror",
    "blockingioerror",
    "interruptederror",
    "childprocesserror",
    "processlookuperror",
    "calledprocesserror",
}
_ERROR_NAMES = {
    "keyerror",
    "indexerror",
    "typeerror",
    "valueerror",
    "attributeerror",
    "nameerror",
    "zerodivisionerror",
    "unboundlocalerror",
    "lookuperror",
    "notimplementederror",
    "recursionerror",
}

# Order matters: the specific patterns first, numbers last.
_MASKS: tuple[tuple[re.Pattern[str], str], ...] = (
    # temporary paths: /tmp/..., /var/folders/..., pytest's basetemp, Windows Temp
    (
        re.compile(
            r"(?:[A-Za-z]:)?[\\/]?(?:[^\s'\"]*[\\/])?"
            r"(?:tmp|temp|Temp|var[\\/]folders|pytest-of-[^\s\\/'\"]+)[\\/][^\s'\"]*"
        ),
        "<tmp>",
    ),
    (
        re.compile(
            r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
        ),
        "<uuid>",
    ),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<addr>"),
    # long hexadecimal ids (hashes, object ids) that contain a digit
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{12,}\b"), "<id>"),
    (re.compile(r"[-+]?\d+(?:[.,]\d+)*(?:[eE][-+]?\d+)?"), "<n>"),
)
_SPACE = re.compile(r"\s+")


def failure_kind(exc_type: str) -> str:
    """The kind of a failure, from its exception type's name (dotted names allowed)."""
    name = exc_type.rsplit(".", 1)[-1].lower()
    if name in ("assertionerror", "failed", "failedassertion") or name.startswith("assert"):
        return ASSERTION
    if "timeout" in name or "timedout" in name or "deadline" in name:
        return TIMEOUT
    if any(part in name for part in _CONNECTION_NAMES):
        return CONNECTION
    if name in _OS_NAMES:
        return OS
    if name in ("importerror", "modulenotfounderror"):
        return IMPORT
    if name in _ERROR_NAMES:
        return ERROR
    return OTHER


def normalise_message(message: str) -> str:
    """The message with what varies between runs masked, whitespace collapsed, the first
    :data:`MAX_MESSAGE` characters kept."""
    text = message
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    text = _SPACE.sub(" ", text).strip()
    return text[:MAX_MESSAGE]


class Signature(NamedTuple):
    """One failure's signature: exception type, normalised message, location, kind."""

    exc_type: str
    message: str
    location: str
    kind: str

    @property
    def text(self) -> str:
        return f"{self.exc_type}: {self.message} @ {self.location}"

    @property
    def key(self) -> str:
        digest = hashlib.sha256(self.text.encode("utf-8", "surrogatepass")).hexdigest()
        return digest[:16]


def signature(exc_type: str, message: str, location: str) -> Signature:
    """The signature of a failure: ``location`` is ``path::function`` of where it was
    raised (paths relative to the project; numbers in it are masked too)."""
    return Signature(
        exc_type,
        normalise_message(message),
        normalise_message(location),
        failure_kind(exc_type),
    )


class SignatureStats(NamedTuple):
    """What the store knows of a signature: how often it was seen failing, how often as a
    confirmed flake (failed, then passed on a rerun), the reruns tried and those that
    passed, and the flaky-hunter's reward summed over its decisions on it."""

    seen: int = 0
    flaky: int = 0
    reruns: int = 0
    rerun_passes: int = 0
    reward_sum: float = 0.0

    @property
    def label(self) -> str:
        """The state feature: ``new``, ``flaky`` (a rerun of it passed before), ``real``
        (reruns were tried and none passed) or ``seen`` (never rerun)."""
        if self.seen == 0:
            return "new"
        if self.flaky > 0:
            return "flaky"
        if self.reruns > 0:
            return "real"
        return "seen"
