"""Calls that live in time, the outcome mix, magic numbers and the counters tests read."""

from __future__ import annotations

import random
import re
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAGIC_OUTCOMES", "STANDARD_MIX", "Call", "CallBook", "MixEntry", "parse_mix"]

#: Caller-ID pool of the service; the pin is the last 4 digits of one of these.
POOL_FIRST, POOL_LAST = 2210130, 2210982

#: Numbers ``7999000 NNN D`` (3 to 7 digits ``N``: 11 to 15 in all) always end the same way,
#: chosen by their last digit ``D``
#: (like a provider's sandbox test numbers). ``(result, seconds)``; ``None`` seconds means
#: "at timeout", ``result`` ``None`` means the call never reaches a final status.
MAGIC_PREFIX = "7999000"
MAGIC_OUTCOMES: dict[str, tuple[str | None, float | None]] = {
    "1": ("NORMAL_CLEARING", 1.0),
    "2": ("USER_BUSY", 1.0),
    "3": ("NO_ANSWER", None),
    "4": ("ORIGINATOR_CANCEL", 1.0),  # a cause outside the contract's table
    "5": (None, None),
    "7": ("SUBSCRIBER_ABSENT", 1.0),
    "8": ("NORMAL_CLEARING", 0.0),
    "9": ("CALL_REJECTED", 1.0),
}
#: Magic numbers ending in this digit are refused with "destination not allowed".
MAGIC_DENIED_DIGIT = "6"
_MAGIC_RE = re.compile(r"7999000[0-9]{3,7}([0-9])")


@dataclass(frozen=True)
class MixEntry:
    """``weight`` parts of the calls end with ``result`` after ``low``-``high`` seconds
    (``None``: exactly at the call's ``timeout``)."""

    result: str
    weight: float
    low: float | None = None
    high: float | None = None


#: The standard mix of the benchmark: most flash calls are not answered and end at timeout.
STANDARD_MIX = (
    MixEntry("NO_ANSWER", 70),
    MixEntry("USER_BUSY", 20, 1.0, 3.0),
    MixEntry("NORMAL_CLEARING", 10, 2.0, 8.0),
)


def parse_mix(text: str) -> tuple[MixEntry, ...]:
    """``"NO_ANSWER@timeout:70,USER_BUSY@1-3:20"`` → mix entries."""
    entries = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"([A-Z_]+)@(timeout|[0-9.]+-[0-9.]+):([0-9.]+)", part)
        if not m:
            raise ValueError(
                f"mix entry {part!r} is not RESULT@timeout:WEIGHT or RESULT@LO-HI:WEIGHT"
            )
        result, when, weight = m.groups()
        if when == "timeout":
            entries.append(MixEntry(result, float(weight)))
        else:
            low, high = (float(x) for x in when.split("-"))
            entries.append(MixEntry(result, float(weight), low, high))
    if not entries:
        raise ValueError("mix is empty")
    return tuple(entries)


@dataclass
class Call:
    callid: str
    dn: str
    pin: str
    timeout: int
    started_at: float
    #: Final result once ``ends_at`` has passed; ``None``: never final.
    result: str | None
    ends_at: float
    request_id: str | None

    def status(self, now: float) -> str:
        if self.result is None or now < self.ends_at:
            return "null"
        return self.result

    def as_dict(self) -> dict[str, Any]:
        return {
            "callid": self.callid,
            "dn": self.dn,
            "pin": self.pin,
            "timeout": self.timeout,
            "started_at": self.started_at,
            "ends_at": self.ends_at,
            "result": self.result,
            "request_id": self.request_id,
        }


@dataclass
class CallBook:
    """All calls placed, with the counters tests and benchmarks read."""

    mix: tuple[MixEntry, ...] = STANDARD_MIX
    deny_prefixes: tuple[str, ...] = ()
    callid_ttl_s: float = 3600.0
    seed: int | None = None
    calls: dict[str, Call] = field(default_factory=dict)
    starts_by_dn: Counter[str] = field(default_factory=Counter)
    starts_by_request: Counter[str] = field(default_factory=Counter)
    requests_by_method: Counter[str] = field(default_factory=Counter)
    status_by_callid: Counter[str] = field(default_factory=Counter)
    #: Arrival times (epoch s) and methods of the latest API requests, for rate and order checks.
    arrivals: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=200_000))

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def denied(self, dn: str) -> bool:
        magic = _MAGIC_RE.fullmatch(dn)
        if magic and magic.group(1) == MAGIC_DENIED_DIGIT:
            return True
        return any(dn.startswith(p) for p in self.deny_prefixes)

    def count_start(self, dn: str, request_id: str | None) -> None:
        self.starts_by_dn[dn] += 1
        if request_id:
            self.starts_by_request[request_id] += 1

    def place(self, dn: str, timeout: int, request_id: str | None) -> Call:
        now = time.time()
        result, after = self._plan(dn, timeout)
        ends_after = timeout if after is None else min(after, timeout)
        call = Call(
            callid=str(uuid.uuid4()),
            dn=dn,
            pin=str(self._rng.randint(POOL_FIRST, POOL_LAST))[-4:],
            timeout=timeout,
            started_at=now,
            result=result,
            ends_at=now + ends_after,
            request_id=request_id,
        )
        self.calls[call.callid] = call
        return call

    def find(self, callid: str) -> Call | None:
        call = self.calls.get(callid)
        if call is not None and time.time() - call.ends_at > self.callid_ttl_s:
            del self.calls[callid]
            return None
        return call

    def prune(self) -> int:
        """Forget calls past their retention; returns how many."""
        cutoff = time.time() - self.callid_ttl_s
        old = [cid for cid, c in self.calls.items() if c.ends_at < cutoff]
        for cid in old:
            del self.calls[cid]
        return len(old)

    def reset(self) -> None:
        self.calls.clear()
        self.starts_by_dn.clear()
        self.starts_by_request.clear()
        self.requests_by_method.clear()
        self.status_by_callid.clear()
        self.arrivals.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "calls": len(self.calls),
            "starts": sum(self.starts_by_dn.values()),
            "starts_by_dn": dict(self.starts_by_dn),
            "starts_by_request": dict(self.starts_by_request),
            "requests_by_method": dict(self.requests_by_method),
            "status_by_callid": dict(self.status_by_callid),
        }

    def _plan(self, dn: str, timeout: int) -> tuple[str | None, float | None]:
        magic = _MAGIC_RE.fullmatch(dn)
        if magic and magic.group(1) in MAGIC_OUTCOMES:
            return MAGIC_OUTCOMES[magic.group(1)]
        entry = self._rng.choices(self.mix, weights=[e.weight for e in self.mix])[0]
        if entry.low is None or entry.high is None:
            return entry.result, None
        return entry.result, self._rng.uniform(entry.low, entry.high)
