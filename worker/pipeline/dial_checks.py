"""What a claimed request must pass before it dials: its verification (a resend's cooldown,
cap and attempts), then the call limits (per number, fraud and spend). A request that fails
one settles without a call: ``invalid`` naming the field and the rule, or ``rate_limited``
with ``retry_at``. Test numbers skip the call limits (a reviewer may try often; they cost
nothing), not their verification's rules.

The verification is looked at first and the call recorded in it last, once every limit has
admitted the request: a request a limit refuses uses up none of its verification's calls and
restarts no cooldown. (Two resends racing past the first look meet again at the record,
which one of them loses; that one has been counted by the limits.)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from callpass_producer.contracts.outcome import Outcome, OutcomeError
from worker.ops import metrics
from worker.pipeline.call_limits import CallLimits
from worker.pipeline.settlement import Settler
from worker.pipeline.store import RequestRecord
from worker.pipeline.verifications import Decision, Verdict, Verifications

__all__ = ["DialChecks"]

log = logging.getLogger(__name__)

_REFUSALS: Final = {
    Verdict.ID_TAKEN: (
        "verification_id",
        "is in use by another verification: pass resend: true to call it again",
    ),
    Verdict.UNKNOWN: (
        "verification_id",
        "names no verification (never started, or expired after CALLPASS_RESULT_EXPIRES_S)",
    ),
    Verdict.OTHER_NUMBER: ("dn", "is not the number of this verification"),
    Verdict.FINISHED: ("verification_id", "is finished: a correct code ended it"),
    Verdict.LOCKED: (
        "verification_id",
        "is locked: its code attempts are used up (CALLPASS_CODE_ATTEMPTS)",
    ),
}


@dataclass
class DialChecks:
    settler: Settler
    #: Verifications across resends; ``None``: every request is a verification of one.
    verifications: Verifications | None = None
    #: Per-number, fraud and spend limits; ``None``: none configured.
    call_limits: CallLimits | None = None
    #: Test numbers and their fixed pins (they skip the call limits).
    test_pins: Mapping[str, str] = field(default_factory=dict, repr=False)

    def refusal(self, record: RequestRecord, dn: str) -> str | None:
        """Settle ``record``'s request if a check refuses it; return a summary then."""
        refused = self._verification_refusal(record, commit=False)
        if refused is not None:
            return refused
        if dn not in self.test_pins:
            refused = self._limit_refusal(record, dn)
            if refused is not None:
                return refused
        return self._verification_refusal(record, commit=True)

    def _limit_refusal(self, record: RequestRecord, dn: str) -> str | None:
        limited = self.call_limits.refusal(record, dn) if self.call_limits is not None else None
        if limited is not None:
            return self._rate_limited(record, limited.limit, limited.message, limited.retry_at)
        return None

    def _rate_limited(
        self, record: RequestRecord, limit: str, message: str, retry_at: float | None
    ) -> str:
        metrics.limit_refused(limit)
        log.info("request %s refused by a limit: %s", record.request_id, limit)
        self.settler.settle(record, Outcome.RATE_LIMITED, api_message=message, retry_at=retry_at)
        return "rate_limited"

    def _verification_refusal(self, record: RequestRecord, commit: bool) -> str | None:
        verification_id = record.get("verification_id")
        if not verification_id or self.verifications is None:
            return None
        decision = self.verifications.admit(
            verification_id,
            record.request_id,
            record.get("dn_digest"),
            record.get("dn_prefix"),
            resend=record.get("resend") == "1",
            commit=commit,
        )
        if decision.verdict == Verdict.ADMITTED:
            return None
        return self._refused_by_verification(record, decision)

    def _refused_by_verification(self, record: RequestRecord, decision: Decision) -> str:
        if decision.verdict == Verdict.COOLDOWN:
            return self._rate_limited(
                record,
                "resend_cooldown",
                "a resend within the cooldown (CALLPASS_RESEND_COOLDOWNS_S)",
                decision.retry_at,
            )
        if decision.verdict == Verdict.CAP:
            assert self.verifications is not None
            calls = self.verifications.max_calls
            return self._rate_limited(
                record,
                "resend_cap",
                f"the verification has had its {calls} calls (CALLPASS_RESEND_MAX_CALLS)",
                None,
            )
        log.info("request %s refused by its verification: %s", record.request_id, decision)
        field_name, rule = _REFUSALS[decision.verdict]
        error = OutcomeError(field=field_name, rule=rule)
        self.settler.settle(record, Outcome.INVALID, error=error)
        return "invalid"
