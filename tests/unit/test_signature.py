import hashlib
import hmac

from connectors.meta.signature import sign, verify, verify_any

BODY = b'{"object":"whatsapp_business_account","entry":[]}'


def test_sign_matches_hmac_sha256_hex():
    assert sign(b"s3cret", BODY) == "sha256=" + hmac.new(b"s3cret", BODY, hashlib.sha256).hexdigest()


def test_verify_accepts_only_the_exact_body_and_secret():
    header = sign(b"s3cret", BODY)
    assert verify(b"s3cret", BODY, header)
    assert verify(b"s3cret", BODY, header.upper().replace("SHA256=", "sha256="))  # hex case is not significant
    assert not verify(b"other", BODY, header)
    assert not verify(b"s3cret", BODY + b" ", header)
    assert not verify(b"s3cret", BODY, None)
    assert not verify(b"s3cret", BODY, "sha1=" + header[7:])
    assert not verify(b"s3cret", BODY, "sha256=")


def test_verify_any_names_the_app():
    secrets = {"app-a": b"a", "app-b": b"b"}
    assert verify_any(secrets, BODY, sign(b"b", BODY)) == "app-b"
    assert verify_any(secrets, BODY, sign(b"c", BODY)) is None
