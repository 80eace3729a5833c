"""Privacy errors, as one tree::

    PrivacyError
    ├── SecretsNotConfigured   production mode without a configured KEK / pepper
    ├── UnsealError            a Sealed value that cannot be opened (tampered, wrong KEK, wrong AAD)
    ├── SubjectErased          the subject's data key is tombstoned or unknown: the data is gone
    └── UnknownSubject         a subject id the calling tenant does not own (answered as "not found")
"""

from __future__ import annotations


class PrivacyError(Exception):
    pass


class SecretsNotConfigured(PrivacyError):
    pass


class UnsealError(PrivacyError):
    pass


class SubjectErased(PrivacyError):
    def __init__(self, key_id: str, reason: str = "data key erased or unknown") -> None:
        super().__init__(f"{key_id}: {reason}")
        self.key_id = key_id
        self.subject_id = key_id.split("/", 1)[0]


class UnknownSubject(PrivacyError, LookupError):
    """A subject id that is not the tenant's: answered exactly like one that does not exist (HTTP 404)."""

    def __init__(self, tenant_id: str) -> None:
        super().__init__(f"no such subject in tenant {tenant_id}")
        self.tenant_id = tenant_id
