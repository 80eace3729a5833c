"""The broker a command talks to: KAFKA_BOOTSTRAP_SERVERS, else the one ``wapipe stack up`` started.

The state file of ``wapipe stack up`` is the app's business: below the app, clients take their
bootstrap from the Settings object only."""

from __future__ import annotations

import typer

from wapipe.app.stack.local import StackState, state_file
from wapipe.config import Settings
from wapipe.kafka_edge import KafkaEndpoint, NoKafka, check_access


def resolve_bootstrap(settings: Settings, *, check: bool = True) -> KafkaEndpoint:
    """KAFKA_BOOTSTRAP_SERVERS, else the broker `wapipe stack up` started; with the security of
    ``settings``. A secured endpoint is tried once (``check``): refused credentials raise
    ``KafkaAuthError`` (a ``NoKafka``) here, with the broker's reason, before any client retries."""
    if settings.kafka_bootstrap_servers:
        bootstrap = settings.kafka_bootstrap_servers
    else:
        st = StackState.load(state_file(settings))
        if st is None:
            raise NoKafka("no Kafka: run `wapipe stack up` or set KAFKA_BOOTSTRAP_SERVERS")
        bootstrap = st.bootstrap
    ep = KafkaEndpoint.from_settings(settings, bootstrap)
    if check and ep.security.protocol != "PLAINTEXT":
        check_access(ep)
    return ep


def bootstrap_or_exit(settings: Settings) -> KafkaEndpoint:
    """``resolve_bootstrap`` for a command: no broker (or refused credentials) is one line
    ``error: <reason>`` on stderr and exit code 1, not a traceback."""
    try:
        return resolve_bootstrap(settings)
    except NoKafka as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
