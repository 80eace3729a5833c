"""Inbound media: fetched from Meta with the tenant's token, sealed under the sender's data key
and kept in the tenant's storage (a local folder or S3-compatible), swept by the tenant's
``content`` retention. See docs/media.md."""
