"""The webhook ingress (``wapipe ingress``): Meta → verified → ``wa.webhook.raw``, acked before 200.

Modules: ``app`` (the ASGI app, :class:`IngressApp`, ``WEBHOOK_PATH``), ``server`` (uvicorn + the
READY line), ``webhook`` (the hot path), ``callbacks`` (Meta's signed_request callbacks and the
deletion-status page), ``envelope`` (partition key), ``signed_request`` (parse/verify, ``encode``
for tests and the sandbox), ``privacy_status``, ``metrics``. Its Kafka writes go through
``wapipe.publisher``. Nothing is imported here so ``wapipe --help`` stays fast.
"""
