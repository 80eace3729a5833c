"""Privacy errors, as one tree::

    PrivacyError
    ├── SecretsNotConfigured   production mode without a configured KEK / pepper
    ├── UnsealError            a Sealed value that cannot be opened (tampered, wrong KEK, wrong AAD)
    └── SubjectErased          the subject's data key is tombstoned or unknown: the data is gone
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
