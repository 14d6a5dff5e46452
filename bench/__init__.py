"""``make bench``: the end-to-end benchmark of the pipeline against this machine's limits.

- ``bench.receivers``: the receivers the deliveries go to (nginx answering at once; a Python
  receiver answering after a delay or hanging) and the arrival log they all write, which is the
  ground truth of what arrived and when.
- ``bench.limits``: the machine's bounds measured with the same libraries: (a) aiokafka
  produce-then-consume of the same records, (b) an aiohttp POST loop against the same receiver,
  and each receiver's own capacity.
- ``bench.e2e``: the workload (webhooks, events) and one scenario end to end: router and delivery
  as separate ``akece-webhooks run --role ...`` processes, a drain of N pre-published events for
  throughput, then a paced run at half that rate for latency.
- ``bench.report``: JSON, a markdown table and a PNG plot under ``bench/results/``.

Run ``python -m bench --help``.
"""
