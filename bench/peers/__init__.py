"""Peers: what the pipeline is compared with on the same machine, broker, receiver and payloads.

- ``naive``: a bare aiokafka + aiohttp loop (``python -m bench.peers.naive``).
- ``camel``: an Apache Camel route, Kafka to HTTP (Maven project in ``bench/peers/camel/``).
- ``drain``: the comparison (``python -m bench --peers``): each system alone drains the same
  backlog of Chatwoot ``message_created`` events to one webhook served by nginx.
"""
