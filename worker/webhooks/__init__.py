"""Webhook delivery: signed ``call.placed`` and ``call.completed`` events, sent at least once.

The modules, in the order an event meets them:

- :mod:`worker.webhooks.events`: the events a request emits, stored once under a stable id.
- :mod:`worker.webhooks.store`: where events wait in Redis until delivered or dead-lettered
  (its atomic steps are the Lua scripts of :mod:`worker.webhooks.store_scripts`).
- :mod:`worker.webhooks.delivery`: one delivery attempt, and what its answer means.
- :mod:`worker.webhooks.signature`: Standard Webhooks signing, and verifying for receivers.
- :mod:`worker.webhooks.destinations`: which URLs and addresses deliveries may go to.
- :mod:`worker.webhooks.guard`: the session deliveries use, checked on every connection.
- :mod:`worker.webhooks.deadline`: a total deadline for one attempt.

Importing this package imports none of them, so a receiver that needs only
:mod:`worker.webhooks.signature` pulls in nothing beyond the standard library.
"""
