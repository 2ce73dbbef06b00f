"""Rules that tie settings together, checked once every field has passed its own rule."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from worker.addresses import is_loopback
from worker.pipeline.schedule import START_RETRY_MAX_DELAY_S
from worker.settings.errors import SettingsError
from worker.settings.variables import variable_name

if TYPE_CHECKING:
    from worker.settings.model import Settings

#: A webhook lease outlasts an attempt's deadline by this much: time to record the attempt.
WEBHOOK_LEASE_MARGIN_S = 10.0


def check_consistency(settings: Settings) -> None:
    """Raise :class:`SettingsError` for the first rule between settings these break."""
    _check_api_url(settings)
    _check_webhook_url(settings)
    _check_webhook_lease(settings)
    _check_visibility_timeout(settings)
    _check_webhook_queue(settings)


def _check_webhook_queue(settings: Settings) -> None:
    # One name for two queues would serve deliveries as starts or polls, out of their order.
    taken = settings.call_queues
    if settings.effective_webhook_queue in taken:
        raise SettingsError(
            variable_name("webhook_queue"),
            f"must differ from the calls' queues ({', '.join(taken)})",
        )


def _check_api_url(settings: Settings) -> None:
    parts = urlsplit(settings.api_url)
    plain_http_off_host = parts.scheme == "http" and not is_loopback(parts.hostname or "")
    if plain_http_off_host and not settings.insecure_allow_http:
        raise SettingsError(
            variable_name("api_url"),
            "must be https (plain http would send the token in clear); http is accepted "
            "for loopback hosts, or anywhere with CALLPASS_INSECURE_ALLOW_HTTP=true",
        )


def _check_webhook_url(settings: Settings) -> None:
    if not settings.webhook_url:
        return
    if not settings.webhook_secrets.get_secret_value():
        raise SettingsError(
            variable_name("webhook_url"), "needs CALLPASS_WEBHOOK_SECRETS to sign deliveries"
        )
    # Otherwise every request without a webhook_url of its own would settle invalid.
    from worker.webhooks.destinations import DestinationRefused

    try:
        settings.webhook_policy.check_url(settings.webhook_url)
    except DestinationRefused as exc:
        raise SettingsError(variable_name("webhook_url"), exc.rule) from None


def _check_webhook_lease(settings: Settings) -> None:
    # A lease that ends while its attempt still runs sends the attempt again.
    lease = settings.effective_webhook_lease_s
    deadline = settings.effective_webhook_deadline_s
    if lease < deadline + WEBHOOK_LEASE_MARGIN_S:
        raise SettingsError(
            variable_name("webhook_lease_s"),
            f"must exceed CALLPASS_WEBHOOK_DEADLINE_S by at least "
            f"{WEBHOOK_LEASE_MARGIN_S:g} s (lease {lease:g} s, deadline {deadline:g} s): "
            "a delivery still in flight would be sent again",
        )


def _check_visibility_timeout(settings: Settings) -> None:
    # A message not yet due (a countdown) or still running must never be handed to a second
    # worker: the visibility time-out exceeds the longest countdown plus a run. (Polls are no
    # messages: they wait in Redis, see worker.pipeline.due_polls.)
    longest_countdown = max(
        START_RETRY_MAX_DELAY_S,  # a start deferred while the API is unreachable
        settings.max_start_s + 1.0,  # a duplicate waiting for a dialing delivery
    )
    needed = longest_countdown + settings.max_start_s
    if settings.visibility_timeout_s <= needed:
        raise SettingsError(
            variable_name("visibility_timeout_s"),
            f"must exceed the longest countdown plus the longest run ({needed:g} s with "
            "these time-outs and attempts)",
        )
