"""Whatever a producer puts in the headers the worker reads, each request settles once.

Hypothesis sends valid ``start_call`` requests to the real worker with any JSON value (and the
non-finite floats Python's JSON also writes) in ``callpass_requested_at``, ``callpass_attempt``
and ``callpass_infra_attempt``. Each must settle exactly once with a SUCCESS document (no task
in FAILURE, no request left hanging), be placed at most once and never after its placement
deadline counted from when the test sent it, and the worker log must not show its number.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from celery import Celery
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import Simulator
from worker.dev.stack import Proc

HEADERS = ("callpass_requested_at", "callpass_attempt", "callpass_infra_attempt")
#: Requests per Hypothesis example, sent together then awaited together.
BATCH = 20
EXAMPLES = max(1, int(os.environ.get("CALLPASS_HEADER_EXAMPLES", "120")) // BATCH)
#: The worker's default placement deadline (the suite does not change it).
PLACE_DEADLINE_S = 30.0
SETTLE_TIMEOUT_S = 60.0

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and ±inf included: Python's JSON writes and reads them
    | st.floats(min_value=time.time() - 120, max_value=time.time() + 600)  # near now
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=5,
)
header_sets = st.fixed_dictionaries({}, optional=dict.fromkeys(HEADERS, json_values))


def fresh_dn() -> str:
    return f"79991{uuid.uuid4().int % 10**9:09d}"  # a fresh number: no per-number limit


def test_any_header_values_settle_each_request_once_and_never_late(
    app: Celery, sim: Simulator, worker: Proc
) -> None:
    sent: list[tuple[str, str, float, dict[str, Any]]] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(header_sets, min_size=BATCH, max_size=BATCH))
    def property_holds(batch: list[dict[str, Any]]) -> None:
        launched = []
        for headers in batch:
            dn = fresh_dn()
            at = time.time()
            result = app.send_task(
                "callpass.start_call",
                kwargs={"dn": dn, "timeout": 2},
                queue="callpass",
                headers=headers,
            )
            launched.append((result, dn, at, headers))
            sent.append((result.id, dn, at, headers))
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        docs = [
            r.get(timeout=max(0.1, deadline - time.monotonic()), propagate=False)
            for r, _, _, _ in launched
        ]
        calls = sim.calls()
        for (result, dn, at, headers), doc in zip(launched, docs, strict=True):
            assert result.state == "SUCCESS", f"{headers!r}: {result.state} {result.traceback}"
            placed = [c for c in calls if c["dn"] == dn]
            if doc["outcome"] == "expired":
                assert placed == [], f"{headers!r}: expired, yet placed"
            else:
                assert doc["call_placed"] is True, f"{headers!r}: {doc}"
                assert len(placed) == 1, f"{headers!r}: placed {len(placed)} times"
            for call in placed:
                late_by = call["started_at"] - (at + PLACE_DEADLINE_S)
                assert late_by <= 0, f"{headers!r}: placed {late_by:.1f} s after its deadline"

    property_holds()

    assert len(sent) >= EXAMPLES * BATCH
    assert worker.alive(), worker.log_tail()
    log = worker.log_path.read_text(errors="replace")
    shown = [dn for _, dn, _, _ in sent if dn in log]
    assert shown == [], f"numbers in clear in the worker log: {shown[:3]}"
