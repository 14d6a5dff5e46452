"""Delivery: each delivery record POSTed, signed, to its webhook; retried through the retry tiers;
dead-lettered in the end.

- ``worker``: ``DeliveryWorker`` wires the parts below to one consumer group (loop, tasks, rebalances);
  ``gauges``: what it reports on every commit tick (in flight, lag, retry tier depth).
- ``intake``: fetched records become jobs within the in-flight budgets (backpressure, pauses, due holds).
- ``attempt``: one job's attempt: ``policy.precheck``, the signed POST (``http``, ``signing``),
  ``policy.next_step``, the attempt log and retry/DLQ records (``records``; ``writer`` produces them
  in batches); ``report``: its metrics and its one log line.
- ``commits``: the offset ledger (``ledger``) and the consumer's commits with their metadata.
- ``policy``: the pure decisions (``precheck``, ``next_step``) and the ``ErrorClass`` vocabulary.
- ``dispatch``: per-key order, per-webhook bulkheads, the global cap; ``breaker``: per-webhook circuit
  breakers and auto-disable; ``tiers``: holding a retry tier's head until due.
- ``ping``: a test delivery (``webhooks test``).

``services.run`` builds the worker for ``akece-webhooks deliver`` and ``run --role delivery``.
"""
