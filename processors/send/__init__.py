"""The send pipeline: wa.send.requested → validate → dedup → lanes → pace → Graph API → results.

See docs/send-pipeline.md. Entry point: ``wapipe worker`` (``processors.send.app.run_worker``).
"""
