"""Pure functions: validation, classification, the poll schedule, masking, errors."""

from __future__ import annotations

import itertools
import json
import ssl

import pytest
import requests
import urllib3
from celery import Celery

from callpass_producer.contracts.outcome import Outcome
from worker.api.errors import (
    ApiRejectedError,
    AuthError,
    CallPassError,
    ConnectError,
    InvalidRequestError,
    OutcomeUnknownError,
    PermanentError,
    RateLimitedError,
    ServerError,
    TransientError,
)
from worker.api.results import classify_result, is_in_progress
from worker.api.retry_after import retry_after_s
from worker.api.transport import envelope_data, translate_transport_error
from worker.backoff import capped_backoff_s
from worker.masking import mask_dn, mask_text, masked_reprs
from worker.pipeline.schedule import PollSchedule
from worker.validation import parse_start_request, validate_dn, validate_timeout


class TestValidation:
    @pytest.mark.parametrize("dn", ["79991234567", "7" + "1" * 14])
    def test_valid_numbers_pass(self, dn: str) -> None:
        assert validate_dn(dn) == dn

    @pytest.mark.parametrize(
        "dn", ["", "7999123456", "7" + "1" * 15, "+79991234567", "79991234567\n", "7999123456x"]
    )
    def test_invalid_numbers_name_the_field(self, dn: str) -> None:
        with pytest.raises(InvalidRequestError) as info:
            validate_dn(dn)
        assert info.value.field == "dn"

    @pytest.mark.parametrize("timeout", [2, 99])
    def test_timeout_bounds_are_inclusive(self, timeout: int) -> None:
        assert validate_timeout(timeout) == timeout

    @pytest.mark.parametrize("timeout", [1, 100, -5, 2.0, False, None, "5"])
    def test_bad_timeouts_are_refused(self, timeout: object) -> None:
        with pytest.raises(InvalidRequestError) as info:
            validate_timeout(timeout)
        assert info.value.field == "timeout"

    def test_timeout_defaults_when_absent(self) -> None:
        request = parse_start_request((), {"dn": "79991234567"}, default_timeout=20)
        assert request.timeout == 20 and request.request_id is None

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"dn": "79991234567", "request_id": "has space"}, "request_id"),
            ({"dn": "79991234567", "request_id": "x" * 129}, "request_id"),
            ({"dn": "79991234567", "webhook_url": "ftp://x"}, "webhook_url"),
            ({"dn": "79991234567", "webhook_url": 5}, "webhook_url"),
        ],
    )
    def test_optional_fields_have_rules_too(self, kwargs: dict[str, object], field: str) -> None:
        with pytest.raises(InvalidRequestError) as info:
            parse_start_request((), kwargs, default_timeout=20)
        assert info.value.field == field


class TestOutcomes:
    @pytest.mark.parametrize("raw", ["null", None, ""])
    def test_in_progress_values(self, raw: object) -> None:
        assert is_in_progress(raw) and classify_result(raw) is None

    @pytest.mark.parametrize(
        ("raw", "outcome"),
        [
            ("NORMAL_CLEARING", Outcome.ANSWERED),
            ("USER_BUSY", Outcome.BUSY),
            ("NO_ANSWER", Outcome.NO_ANSWER),
            ("CALL_REJECTED", Outcome.REJECTED),
            ("SUBSCRIBER_ABSENT", Outcome.NOT_DELIVERED),
            ("UNALLOCATED_NUMBER", Outcome.BAD_NUMBER),
            ("SWITCH_CONGESTION", Outcome.NETWORK_TROUBLE),
            ("ORIGINATOR_CANCEL", Outcome.NOT_ANSWERED),
        ],
    )
    def test_hang_up_causes_are_classified(self, raw: str, outcome: Outcome) -> None:
        assert classify_result(raw) is outcome

    @pytest.mark.parametrize("raw", ["answered", 5, "NO ANSWER", {"x": 1}])
    def test_values_that_are_not_causes_are_refused(self, raw: object) -> None:
        with pytest.raises(ValueError, match="not a hang-up cause"):
            classify_result(raw)


class TestSchedule:
    @pytest.mark.parametrize("timeout", [2, 3, 5, 10, 30, 99])
    def test_offsets_cover_the_call_and_the_grace(self, timeout: int) -> None:
        schedule = PollSchedule(interval_s=2.0, end_slack_s=0.25, grace_s=15.0)
        offsets = schedule.offsets(timeout)
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
        assert timeout + 0.25 in offsets  # the poll that catches calls ending at timeout
        assert offsets[-1] <= timeout + 15.0
        assert offsets[0] > 1.0
        # A call ending after 1 s waits at most one interval for the next poll, the end
        # poll included; and the steps are even (none shorter than needed).
        ringing = [0.0 + 1.0, *[o for o in offsets if o <= timeout + 0.25]]
        steps = [b - a for a, b in itertools.pairwise(ringing)]
        assert max(steps) <= 2.0
        assert max(steps) - min(steps) < 1e-6
        # As few ringing polls as that allows.
        assert len(steps) == max(1, -(-(timeout + 0.25 - 1.0) // 2.0))

    def test_a_ten_second_call_is_polled_every_1_82_s_up_to_just_after_10(self) -> None:
        assert PollSchedule(grace_s=0).offsets(10) == [2.82, 4.64, 6.46, 8.28, 10.1]

    def test_next_delay_ends_after_the_grace(self) -> None:
        schedule = PollSchedule(interval_s=1.0, end_slack_s=0.25, grace_s=3.0)
        assert schedule.offsets(5)[:5] == [1.85, 2.7, 3.55, 4.4, 5.25]
        assert schedule.next_delay(0.0, 5) == pytest.approx(1.85)
        assert schedule.next_delay(4.9, 5) == pytest.approx(0.35)
        assert schedule.next_delay(8.1, 5) is None


class TestMasking:
    def test_mask_dn_keeps_head_and_tail(self) -> None:
        assert mask_dn("79991234567") == "7999*****67"

    def test_mask_text_masks_numbers_but_not_uuids(self) -> None:
        text = "dial 79991234567 call 12345678-1234-1234-1234-123456789012 +79991234567"
        masked = mask_text(text)
        assert "79991234567" not in masked
        assert "12345678-1234-1234-1234-123456789012" in masked

    def test_reprs_mask_numbers_given_as_int_or_str(self) -> None:
        args, kwargs = masked_reprs((79991234567,), {"dn": "79991234567", "timeout": 5})
        assert "79991234567" not in args + kwargs and "'timeout': 5" in kwargs

    def test_reprs_show_the_names_of_limit_keys_never_their_values(self) -> None:
        _, kwargs = masked_reprs((), {"limit_keys": {"ip": "203.0.113.9", "account": "a-42"}})
        assert "203.0.113.9" not in kwargs and "a-42" not in kwargs
        assert "'ip': '<hidden>'" in kwargs
        assert masked_reprs((), {"limit_keys": "203.0.113.9"})[1] == "{'limit_keys': '<hidden>'}"


class TestErrors:
    @pytest.mark.parametrize(
        "exc",
        [
            InvalidRequestError("dn", "must be digits"),
            AuthError("refused", 403),
            ApiRejectedError("destination not allowed", 200),
            RateLimitedError("slow down", 429, 2.5),
            ServerError("boom", 503),
            ConnectError("refused"),
            OutcomeUnknownError("maybe placed", "ReadTimeoutError: ..."),
        ],
    )
    def test_errors_survive_celerys_json_round_trip(self, exc: CallPassError) -> None:
        backend = Celery(backend="cache+memory://", set_as_current=False).backend
        stored = json.loads(json.dumps(backend.prepare_exception(exc, "json")))
        rebuilt = backend.exception_to_python(stored)
        assert type(rebuilt).__name__ == type(exc).__name__
        assert rebuilt.args == exc.args
        assert str(rebuilt) == str(exc)

    def test_the_tree_tells_retry_from_the_type(self) -> None:
        assert issubclass(AuthError, PermanentError) and issubclass(ServerError, TransientError)
        assert ServerError("x", 503).never_reached_server
        assert not ServerError("x", 500).never_reached_server
        assert RateLimitedError("x").never_reached_server and ConnectError("x").never_reached_server
        assert not issubclass(OutcomeUnknownError, TransientError)


class TestEnvelope:
    def test_method_level_error_keeps_the_message(self) -> None:
        body = b'{"data":{"message":"destination not allowed","result":"error"},"status":"success"}'
        with pytest.raises(ApiRejectedError, match="destination not allowed"):
            envelope_data(200, {}, body)

    @pytest.mark.parametrize(
        ("status", "body", "error"),
        [
            (401, b'{"status":"error","data":{"message":"no token"}}', AuthError),
            (429, b"", RateLimitedError),
            (502, b"<html>bad gateway</html>", ServerError),
            (200, b'{"status":"success","data":{"callid"', TransientError),
            (200, b"[]", TransientError),
        ],
    )
    def test_errors_follow_the_envelope_then_the_status(
        self, status: int, body: bytes, error: type[Exception]
    ) -> None:
        with pytest.raises(error):
            envelope_data(status, {"Retry-After": "3"}, body)

    def test_only_a_refused_certificate_counts_as_a_tls_error_before_sending(self) -> None:
        refused = requests.exceptions.SSLError(
            urllib3.exceptions.SSLError(ssl.SSLCertVerificationError("self-signed"))
        )
        refused.__cause__ = refused.args[0]
        refused.args[0].__cause__ = refused.args[0].args[0]
        assert isinstance(translate_transport_error(refused), ConnectError)
        broken = requests.exceptions.SSLError(urllib3.exceptions.SSLError("bad record mac"))
        lost = translate_transport_error(broken)
        assert isinstance(lost, TransientError) and not lost.never_reached_server

    def test_retry_after_seconds(self) -> None:
        assert retry_after_s("3") == 3.0
        assert retry_after_s("2.5") == 2.5
        assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date already past
        assert retry_after_s("100000") is None  # more than a day: not an answer
        assert retry_after_s("-1") is None
        assert retry_after_s(None) is None


def test_backoff_doubles_from_its_base_up_to_its_cap() -> None:
    assert [capped_backoff_s(n, 1.0, 30.0) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert capped_backoff_s(10**6, 1.0, 30.0) == 30.0  # no overflow for a hostile header
    assert capped_backoff_s(-3, 0.5, 30.0) == 0.5
