"""The names foreign services use: tasks, queues and the producer-visible task state."""

from __future__ import annotations

from typing import Final

__all__ = [
    "CODE_QUEUE_SUFFIX",
    "DEFAULT_QUEUE",
    "PLACED",
    "POLL_QUEUE_SUFFIX",
    "POLL_TASK",
    "START_TASK",
    "VERIFY_TASK",
    "WEBHOOK_QUEUE_SUFFIX",
    "WEBHOOK_TASK",
]

START_TASK: Final = "callpass.start_call"
POLL_TASK: Final = "callpass.poll_status"
VERIFY_TASK: Final = "callpass.verify_code"
WEBHOOK_TASK: Final = "callpass.deliver_webhook"

#: Custom task state a producer sees once the call is placed; ``info`` holds callid and pin.
PLACED: Final[str] = "PLACED"  # str: compared with the states Celery reports

DEFAULT_QUEUE: Final = "callpass"
#: Code checks go to "<queue>.codes", taken before anything else: a person waits at a form.
#: (``verify_code`` sent to "<queue>" itself works too, behind the starts queued there.)
CODE_QUEUE_SUFFIX: Final = ".codes"
#: The worker's own polls go to "<queue>.polls", taken only when no start waits.
POLL_QUEUE_SUFFIX: Final = ".polls"
#: Webhook deliveries go to "<queue>.webhooks" unless CALLPASS_WEBHOOK_QUEUE names another.
WEBHOOK_QUEUE_SUFFIX: Final = ".webhooks"
