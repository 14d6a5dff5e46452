"""What every stage needs, below them all (it imports only ``services.contract``).

- ``settings``: the one ``Settings`` model (``settings_kafka``: its Kafka group and security rule;
  ``settings_table``: the README's configuration table); ``logging``; ``metrics`` (every metric);
  ``errors`` (the error tree); ``exits`` (the commands' exit codes).
- ``kafka``: every aiokafka client, made and started here (``kafka_security``: TLS/SASL options);
  ``outage``: what an outage is and the backoff; ``broker_link.BrokerLink`` (the process's view of
  the broker, probing with ``broker_probe.BrokerProbe``) and ``rides_out.RidesOut`` ride them out.
- ``runtime``: the ``Worker`` protocol, the ``Supervisor``, ``first_of``.
- ``webhooks``: the ``Webhook`` record (its ids, secrets and codec); ``webhook_index.WebhookIndex``:
  the webhooks in memory (pure); ``subscriptions``: the ``SubscriptionTable`` that follows the topic
  into an index, the ``SubscriptionStore`` that writes it, ``caught_up_table`` for one-shot commands.
- ``auth``: API tokens and principals (the management API, the operations API, the console).
- ``netguard`` and ``urls``: where a webhook may point, one URL rule. ``alerts``: the alert rules.
- ``cli``: ``akece-webhooks topics ensure``.
"""
