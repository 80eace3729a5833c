"""A JVM broker of a test's own with secured listeners, and the certificates it needs, made here.

* ``SASL_SSL`` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512): what a managed cluster offers;
* ``SSL`` with ``ssl.client.auth=required``: mTLS, a client is its certificate;
* ``PLAINTEXT``: only for the harness (readiness, topics, SCRAM users); the code under test is
  given the secured addresses alone.

Certificates: a CA, the broker's (SAN 127.0.0.1 and localhost, checked by every client) and a
client's (its key encrypted, to exercise KAFKA_SSL_KEY_PASSWORD), all PEM (``ssl.keystore.type=PEM``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wapipe.net import free_port
from tests.harness import make_settings

USERS = {"PLAIN": ("plain-user", "plain-secret"),
         "SCRAM-SHA-256": ("scram256-user", "scram256-secret"),
         "SCRAM-SHA-512": ("scram512-user", "scram512-secret")}
CLIENT_KEY_PASSWORD = "client-key-secret"


@dataclass(frozen=True)
class Certs:
    ca: Path
    server: Path  # key + chain, PEM (the broker's keystore)
    client_cert: Path
    client_key: Path  # encrypted with CLIENT_KEY_PASSWORD


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key, issuer: str, issuer_key, *, ca: bool = False, san: bool = False,
          usage: tuple = ()) -> x509.Certificate:
    # Valid from an hour before the clock to a day after: nothing here depends on a calendar date.
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
    if san:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False)
    if usage:
        b = b.add_extension(x509.ExtendedKeyUsage(list(usage)), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_certs(folder: Path) -> Certs:
    folder.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = _cert("wapipe-test-ca", ca_key, "wapipe-test-ca", ca_key, ca=True)
    srv_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    srv = _cert("127.0.0.1", srv_key, "wapipe-test-ca", ca_key, san=True,
                usage=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH))
    cli_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cli = _cert("wapipe-mtls-client", cli_key, "wapipe-test-ca", ca_key, usage=(ExtendedKeyUsageOID.CLIENT_AUTH,))
    certs = Certs(folder / "ca.pem", folder / "server.pem", folder / "client.pem", folder / "client.key")
    certs.ca.write_bytes(ca.public_bytes(pem))
    certs.server.write_bytes(srv_key.private_bytes(pem, pkcs8, serialization.NoEncryption())
                             + srv.public_bytes(pem) + ca.public_bytes(pem))
    certs.client_cert.write_bytes(cli.public_bytes(pem))
    certs.client_key.write_bytes(cli_key.private_bytes(
        pem, pkcs8, serialization.BestAvailableEncryption(CLIENT_KEY_PASSWORD.encode())))
    for p in (certs.server, certs.client_key):
        p.chmod(0o600)
    return certs


@dataclass(frozen=True)
class SecureBroker:
    plaintext: str  # the harness's own listener
    sasl_ssl: str
    mtls: str
    certs: Certs
    provider: object

    def sasl_env(self, mechanism: str, password_file: Path, *, password: str | None = None) -> dict[str, str]:
        """Environment of a wapipe process on the SASL_SSL listener (the password from a file)."""
        user, real = USERS[mechanism]
        password_file.write_text((password if password is not None else real) + "\n")
        password_file.chmod(0o600)
        return {"KAFKA_BOOTSTRAP_SERVERS": self.sasl_ssl, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_MECHANISM": mechanism, "KAFKA_SASL_USERNAME": user,
                "KAFKA_SASL_PASSWORD_FILE": str(password_file), "KAFKA_SSL_CA_FILE": str(self.certs.ca)}

    def mtls_env(self) -> dict[str, str]:
        return {"KAFKA_BOOTSTRAP_SERVERS": self.mtls, "KAFKA_SECURITY_PROTOCOL": "SSL",
                "KAFKA_SSL_CA_FILE": str(self.certs.ca), "KAFKA_SSL_CERT_FILE": str(self.certs.client_cert),
                "KAFKA_SSL_KEY_FILE": str(self.certs.client_key), "KAFKA_SSL_KEY_PASSWORD": CLIENT_KEY_PASSWORD}


def _overrides(ports: dict[str, int], certs: Certs) -> dict[str, str]:
    plain_users = " ".join(f'user_{u}="{p}"' for m, (u, p) in USERS.items() if m == "PLAIN")
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    return {
        "listeners": (f"PLAINTEXT://127.0.0.1:{ports['plain']},SASL_SSL://127.0.0.1:{ports['sasl']},"
                      f"SSL://127.0.0.1:{ports['ssl']},CONTROLLER://127.0.0.1:{ports['controller']}"),
        "advertised.listeners": (f"PLAINTEXT://127.0.0.1:{ports['plain']},SASL_SSL://127.0.0.1:{ports['sasl']},"
                                 f"SSL://127.0.0.1:{ports['ssl']}"),
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(certs.server),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(certs.ca),
        "listener.name.ssl.ssl.client.auth": "required",
        "sasl.enabled.mechanisms": ",".join(USERS),
        "listener.name.sasl_ssl.plain.sasl.jaas.config":
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
        "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": scram,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
    }


def _add_scram_users(admin) -> None:
    from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    ups = []
    for mech, enum in (("SCRAM-SHA-256", ScramMechanism.SCRAM_SHA_256), ("SCRAM-SHA-512", ScramMechanism.SCRAM_SHA_512)):
        user, password = USERS[mech]
        ups.append(UserScramCredentialUpsertion(user, ScramCredentialInfo(enum, 4096), password.encode()))
    for fut in admin.alter_user_scram_credentials(ups).values():
        fut.result(30)
    # Credentials reach the listeners through the metadata log: wait until they are described.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            got = admin.describe_user_scram_credentials([u for u, _ in (USERS["SCRAM-SHA-256"], USERS["SCRAM-SHA-512"])])
            if all(f.result(10) for f in got.values()):
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise TimeoutError("SCRAM users not visible")


@contextlib.contextmanager
def secure_broker(folder: Path, **settings_overrides) -> Iterator[SecureBroker]:
    """Start the broker (stopped at the end, also on failure), apply every topic, add SCRAM users."""
    from wapipe.app.stack.local import KafkaProvider
    from wapipe.topics import admin_client, apply_topics

    certs = make_certs(folder / "certs")
    ports: dict[str, int] = {}
    for name in ("plain", "sasl", "ssl", "controller"):
        ports[name] = free_port(exclude=set(ports.values()))
    s = make_settings(folder / "state", kafka_bootstrap_servers=None, **settings_overrides)
    provider = KafkaProvider(s, prefer="jvm", data_dir=folder / "kafka-data", ports=(ports["plain"], ports["controller"]),
                             broker_overrides=_overrides(ports, certs))
    provider.start()
    try:
        admin = admin_client(provider.bootstrap)
        apply_topics(admin, s)
        _add_scram_users(admin)
        yield SecureBroker(provider.bootstrap, f"127.0.0.1:{ports['sasl']}", f"127.0.0.1:{ports['ssl']}", certs, provider)
    finally:
        provider.stop()
