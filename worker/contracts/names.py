"""The names foreign services use: tasks, queues and the producer-visible task state."""

from __future__ import annotations

from typing import Final

__all__ = [
    "DEFAULT_QUEUE",
    "PLACED",
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
#: Webhook deliveries go to "<queue>.webhooks" unless CALLPASS_WEBHOOK_QUEUE names another.
WEBHOOK_QUEUE_SUFFIX: Final = ".webhooks"
