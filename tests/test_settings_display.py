"""``callpass config`` writes each setting as its variable takes it: a line read back gives
the same value (secrets aside, which it never shows)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from worker.settings import load_settings
from worker.settings.display import shown_setting

SET = {
    "CALLPASS_CALL_BUDGETS": "day=100,7999/month=5",
    "CALLPASS_KEY_LIMITS": "ip=5/3600,account=20/86400",
    "CALLPASS_PREFIX_LIMITS": "7999=100/60",
    "CALLPASS_RESEND_COOLDOWNS_S": "30,60,120.5",
    "CALLPASS_INSECURE_ALLOW_HTTP": "true",
}


def _shown_in_full() -> list[str]:
    """Every setting but the secrets (printed as ``**********``, never read back)."""
    return sorted(n for n, v in vars(load_settings(SET)).items() if not isinstance(v, SecretStr))


@pytest.mark.parametrize("name", _shown_in_full())
def test_a_printed_setting_reads_back_as_the_same_value(name: str) -> None:
    value = getattr(load_settings(SET), name)
    shown = shown_setting(name, value)
    if shown == "":
        assert value in ("", None, ()) or value == frozenset()
        return
    again = load_settings({**SET, f"CALLPASS_{name.upper()}": shown})
    assert getattr(again, name) == value, (name, shown)
