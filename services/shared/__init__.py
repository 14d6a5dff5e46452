"""What every stage needs, below them all (it imports only ``services.contract``).

- ``settings``: the one ``Settings`` model; ``logging``; ``metrics`` (every metric); ``errors`` (the
  error tree); ``exits`` (the commands' exit codes).
- ``kafka``: every aiokafka client, made and started here (``kafka_security``: TLS/SASL options);
  ``outage``: riding out the broker's outages (``BrokerLink``, ``RidesOut``).
- ``runtime``: the ``Worker`` protocol, the ``Supervisor``, ``first_of``.
- ``subscriptions``: the ``Webhook`` record, the ``SubscriptionTable`` and ``SubscriptionStore``,
  ``caught_up_table`` for one-shot commands.
- ``auth``: API tokens and principals (the management API, the operations API, the console).
- ``netguard`` and ``urls``: where a webhook may point, one URL rule. ``alerts``: the alert rules.
- ``cli``: ``akece-webhooks topics ensure``.
"""
