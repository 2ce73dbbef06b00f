"""Standard Webhooks signatures: ours against the reference library, rotation, tampering, age."""

from __future__ import annotations

import base64
import email.utils
import time

import pytest
import standardwebhooks

from worker.api.retry_after import retry_after_s
from worker.settings import SettingsError, load_settings
from worker.webhooks.events import event_id_for
from worker.webhooks.signature import (
    WebhookVerificationError,
    generate_secret,
    parse_secret,
    signature_headers,
    verify_delivery,
)

OLD, NEW = generate_secret(), generate_secret()
BODY = b'{"type":"call.completed","data":{"outcome":"answered"}}'


def headers_for(*secrets: str, body: bytes = BODY, ts: int | None = None) -> dict[str, str]:
    return signature_headers([parse_secret(s) for s in secrets], "msg_1", body, ts)


def test_the_reference_library_verifies_each_of_our_signatures() -> None:
    headers = headers_for(OLD, NEW)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (OLD, NEW):  # a receiver on either side of a rotation accepts it
        assert standardwebhooks.Webhook(secret).verify(BODY, headers)["data"] == {
            "outcome": "answered"
        }


def test_we_verify_what_the_reference_library_signs() -> None:
    ts = int(time.time())
    signature = standardwebhooks.Webhook(NEW).sign(
        "msg_2",
        email.utils.parsedate_to_datetime(email.utils.formatdate(ts, usegmt=True)),
        BODY.decode(),
    )
    headers = {"webhook-id": "msg_2", "webhook-timestamp": str(ts), "webhook-signature": signature}
    assert verify_delivery(headers, BODY, [OLD, NEW])["type"] == "call.completed"


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda h, b: (h, b + b" "), "no signature matches"),
        (lambda h, b: ({**h, "webhook-id": "msg_other"}, b), "no signature matches"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-id"}, b), "missing"),
        (lambda h, b: ({**h, "webhook-timestamp": "12e3"}, b), "whole Unix seconds"),
        (lambda h, b: ({**h, "webhook-signature": "v2,abc"}, b), "no signature matches"),
    ],
)
def test_tampered_deliveries_are_refused(tamper, message: str) -> None:  # type: ignore[no-untyped-def]
    headers, body = tamper(headers_for(OLD), BODY)
    with pytest.raises(WebhookVerificationError, match=message):
        verify_delivery(headers, body, OLD)


def test_a_signature_by_a_retired_secret_is_refused() -> None:
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify_delivery(headers_for(OLD), BODY, NEW)


def test_old_and_future_timestamps_are_refused() -> None:
    now = time.time()
    for ts in (int(now) - 301, int(now) + 301):
        with pytest.raises(WebhookVerificationError, match="tolerance"):
            verify_delivery(headers_for(OLD, ts=ts), BODY, OLD, now=now)
    assert verify_delivery(headers_for(OLD, ts=int(now) - 299), BODY, OLD, now=now)


@pytest.mark.parametrize(
    ("secret", "rule"),
    [
        ("dGVzdA==", "must start with 'whsec_'"),
        ("whsec_not base64!", "base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "at least 24 bytes"),
    ],
)
def test_malformed_secrets_name_the_rule(secret: str, rule: str) -> None:
    with pytest.raises(ValueError, match=rule):
        parse_secret(secret)
    with pytest.raises(SettingsError, match=f"CALLPASS_WEBHOOK_SECRETS: secret #2 .*{rule}") as exc:
        load_settings({"CALLPASS_WEBHOOK_SECRETS": f"{OLD},{secret}"})
    assert secret not in str(exc.value)


@pytest.mark.parametrize(
    ("env", "rule"),
    [
        ({"CALLPASS_WEBHOOK_URL": "http://hooks.internal/"}, "only https"),
        ({"CALLPASS_WEBHOOK_URL": "https://10.0.0.5/"}, "not public"),
        (
            {
                "CALLPASS_WEBHOOK_URL": "https://evil.example.org/",
                "CALLPASS_WEBHOOK_ALLOWED_HOSTS": "hooks.example.com",
            },
            "allow-list",
        ),
    ],
)
def test_a_default_webhook_url_the_guard_refuses_stops_the_worker(
    env: dict[str, str], rule: str
) -> None:
    # Otherwise every request without its own webhook_url would settle invalid.
    with pytest.raises(SettingsError, match=f"CALLPASS_WEBHOOK_URL: .*{rule}"):
        load_settings({"CALLPASS_WEBHOOK_SECRETS": OLD, **env})


def test_reprs_and_logs_show_a_webhook_url_host_only() -> None:
    import logging

    from worker.masking import MaskingFilter, masked_reprs

    _, kwargs = masked_reprs((), {"webhook_url": "https://u:p@hooks.example.com/T0/B0/tok?k=v"})
    assert "hooks.example.com/…" in kwargs
    assert not any(s in kwargs for s in ("tok", "k=v", "u:p"))
    record = logging.LogRecord(
        "urllib3.connectionpool",
        10,
        __file__,
        1,
        '%s "POST %s HTTP/1.1" 200',
        ("h", "/T0/tok?k=v"),
        None,
    )
    MaskingFilter().filter(record)
    assert record.getMessage() == 'h "POST /… HTTP/1.1" 200'
    api = logging.LogRecord(
        "urllib3.connectionpool", 10, __file__, 1, '"POST %s HTTP/1.1"', ("/api/v2.0/x/",), None
    )
    MaskingFilter().filter(api)
    assert "/api/v2.0/x/" in api.getMessage()


def test_a_default_webhook_url_needs_secrets() -> None:
    with pytest.raises(SettingsError, match="CALLPASS_WEBHOOK_URL: needs CALLPASS_WEBHOOK_SECRETS"):
        load_settings({"CALLPASS_WEBHOOK_URL": "https://hooks.example.com/"})


@pytest.mark.parametrize(
    ("variable", "value", "rule"),
    [
        ("CALLPASS_WEBHOOK_RETRY_SCHEDULE_S", "0,5,soon", "comma-separated seconds"),
        ("CALLPASS_WEBHOOK_RETRY_SCHEDULE_S", "0,-5", "between 0 and 604800"),
        ("CALLPASS_WEBHOOK_ALLOWED_NETWORKS", "10.0.0.0/33", "networks like 10.0.0.0/8"),
        ("CALLPASS_WEBHOOK_HTTP_HOSTS", "a b", "host names"),
    ],
)
def test_malformed_webhook_settings_name_the_variable(variable: str, value: str, rule: str) -> None:
    with pytest.raises(SettingsError, match=f"{variable}: .*{rule}"):
        load_settings({variable: value})


def test_event_ids_are_stable_per_request_and_type() -> None:
    a = event_id_for("call.placed", "r1", "t1")
    assert a == event_id_for("call.placed", "r1", "t1")
    assert (
        len(
            {a, event_id_for("call.completed", "r1", "t1"), event_id_for("call.placed", "r1", "t2")}
        )
        == 3
    )


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = 1_800_000_000.0
    assert retry_after_s("120", now) == 120
    assert retry_after_s(email.utils.formatdate(now + 90, usegmt=True), now) == pytest.approx(90)
    assert retry_after_s(email.utils.formatdate(now - 90, usegmt=True), now) == 0
    assert retry_after_s("soon", now) is None
    assert retry_after_s(None, now) is None
