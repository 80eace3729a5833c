"""Which brokers a command talks to: KAFKA_BOOTSTRAP_SERVERS, else the one `wapipe stack up` started.

The Kafka edge (``wapipe.edge``) takes its bootstrap from ``Settings`` alone; this fills it in
from the local stack's state when the environment names none.
"""

from __future__ import annotations

from wapipe.config import Settings
from wapipe.edge.clients import settings_endpoint
from wapipe.edge.endpoint import KafkaEndpoint, NoKafka
from wapipe.stack.local import StackState, state_file


def with_stack_bootstrap(settings: Settings) -> Settings:
    """``settings`` as is when it names brokers; else with the bootstrap of `wapipe stack up`'s broker."""
    if settings.kafka_bootstrap_servers:
        return settings
    st = StackState.load(state_file(settings))
    if st is None:
        raise NoKafka("no Kafka: run `wapipe stack up` or set KAFKA_BOOTSTRAP_SERVERS")
    return settings.model_copy(update={"kafka_bootstrap_servers": st.bootstrap})


def resolve_bootstrap(settings: Settings, *, check: bool = True) -> KafkaEndpoint:
    """The endpoint of KAFKA_BOOTSTRAP_SERVERS, else of the local stack's broker, with the security
    of ``settings`` (checked once when secured: ``wapipe.edge.clients.settings_endpoint``)."""
    return settings_endpoint(with_stack_bootstrap(settings), check=check)
