"""The settings of verification flows: resends, test numbers, fallbacks, fraud and spend
limits. :class:`~worker.settings.model.Settings` inherits them (one ``CALLPASS_*`` variable
each, in the README's table like every other)."""

from __future__ import annotations

from typing import Annotated

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from worker.settings.lists import Budgets, Delays, KeyLimits, PrefixLimits
from worker.settings.rules import FixedPinNumbers, QueueName, whole_number

__all__ = ["VerificationFlowSettings"]


class VerificationFlowSettings(BaseSettings):
    """Fields only: the sources, rules between settings and the display are Settings'."""

    #: Wait before each resend of a verification, the first, the second... (the last repeats).
    resend_cooldowns_s: Delays = (30, 60, 120)
    #: Calls one verification may have, its first included.
    resend_max_calls: Annotated[int, whole_number(1, 20)] = 3
    #: How many of a verification's latest calls have pins that check.
    code_live_calls: Annotated[int, whole_number(1, 20)] = 2
    #: ``NUMBER:PIN`` pairs, comma-separated: numbers that never ring (app-store reviewers,
    #: end-to-end tests) and settle as a call would, with that pin.
    test_numbers: FixedPinNumbers = SecretStr("")
    #: Queue of a product's fallback task when its request names none.
    fallback_queue: QueueName = "celery"
    #: Calls per window per ``limit_keys`` name a producer passes: ``ip=5/3600`` (empty: none).
    key_limits: KeyLimits = ()
    #: Calls per window to numbers starting with a prefix: ``7999=100/60`` (empty: none).
    prefix_limits: PrefixLimits = ()
    #: Calls per UTC day or month, all numbers or a prefix's: ``day=10000,7999/month=500``.
    call_budgets: Budgets = ()
    #: How many first digits of a number the metrics by prefix use.
    metrics_prefix_digits: Annotated[int, whole_number(1, 15)] = 4
