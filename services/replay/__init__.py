"""The re-enqueue engine: dead letters (``akece-webhooks dlq replay``) and a webhook's events
(``akece-webhooks recover``) sent again, once, with a crash-safe record of each run.

- ``engine``: plan, claim, send, confirm (the ``Engine``, its ``Source`` protocol and ``Summary``).
- ``replay``: the dead-letter source; ``recover``: the events-topic source (re-routed for one webhook).
- ``ledger``: the runs and their claims, on a compacted topic; ``ratelimit``: the token bucket;
  ``progress``: the progress line; ``window``: time windows over a topic, read as offset ranges.

The commands and HTTP routes that start runs live in ``services.ops``.
"""
