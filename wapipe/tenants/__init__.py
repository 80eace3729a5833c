"""Tenants: who the pipeline sends for, with which numbers, tokens, limits and templates.

* ``models``   — pydantic ``Tenant`` / ``PhoneNumber`` / ``Template`` mirroring the Avro records.
* ``registry`` — ``TenantRegistry``: the compacted ``wa.tenants`` + ``wa.templates`` topics as an
  in-memory table, kept live by a background consumer.
* ``store``    — ``publish_tenant`` / ``publish_template`` (acks=all, flushed).
"""
