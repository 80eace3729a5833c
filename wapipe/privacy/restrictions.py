"""``RestrictionRegistry(settings, bootstrap)``: what the send pipeline and the normaliser consult.

``.start()``, ``.wait_ready(timeout)``, ``.is_restricted(subject_id)`` (or ``(tenant_id, subject_id)``:
subject ids are per tenant already), ``.close()``. A thin name over ``PrivacyRegistry``.
"""

from wapipe.privacy.registry import PrivacyRegistry


class RestrictionRegistry(PrivacyRegistry):
    pass
