"""Publishing events: the ``Publisher`` library the core platform embeds (``publisher``), the
CloudEvents records it writes (``events``) and ``akece-webhooks publish`` (``cli``)."""
