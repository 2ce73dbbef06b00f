"""A producer in another service: nothing from callpass-worker, only Celery.

    CALLPASS_REDIS_URL=redis://127.0.0.1:6379/0 python examples/producer.py 79990001001

Prints the pin as soon as the call is placed, then the outcome document.
"""

from __future__ import annotations

import json
import os
import sys
import time

from celery import Celery

broker = os.environ.get("CALLPASS_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("producer", broker=broker, backend=broker)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    # Keep unacked messages (deferred starts) from coming back early (match the worker's).
    broker_transport_options={"visibility_timeout": 300},
)


def main(dn: str, timeout: int = 5) -> int:
    result = app.send_task(
        "callpass.start_call",
        kwargs={"dn": dn, "timeout": timeout},
        queue="callpass",
        # Keep the number out of the producer's own events and logs.
        argsrepr="()",
        kwargsrepr="{'dn': '<masked>'}",
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = result.state  # PLACED as soon as the call is placed
        if state == "PLACED":
            print(f"pin {result.info['pin']} callid {result.info['callid']}", flush=True)
            break
        if result.ready():
            break
        time.sleep(0.05)
    outcome = result.get(timeout=180)
    print(json.dumps(outcome))
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in {"worker", "tasks", "simulator"})
    print(f"project modules imported: {leaked}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5))
