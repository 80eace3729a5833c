"""Privacy: crypto-shredding keys, pseudonymous subjects, requests, retention (docs/privacy.md)."""

from wapipe.privacy.errors import PrivacyError, SecretsNotConfigured, SubjectErased, UnsealError
from wapipe.privacy.kek import Kek, load_kek
from wapipe.privacy.keyring import KeyRing
from wapipe.privacy.subjects import pepper_from, subject_id

__all__ = ["Kek", "KeyRing", "PrivacyError", "SecretsNotConfigured", "SubjectErased", "UnsealError",
           "load_kek", "pepper_from", "subject_id"]
