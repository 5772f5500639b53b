"""Client secret parsing, passwords, and secret encryption for ConductorOne (connector.sdk.crypto)."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import string
import traceback

import pyrage
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwcrypto import jwk as jose_jwk

from connector.pb.c1.connector.v2 import resource_pb2
from connector.sdk.crypto import (
    PROVIDER_AGE,
    PROVIDER_JWK,
    ClientSecretKey,
    CredentialHelper,
    CryptoError,
    EncryptedData,
    EncryptionConfig,
    InvalidCredentialRequest,
    PrivateKey,
    decrypt_encrypted_data,
    encrypt_password_for,
    generate_password,
    jwk_thumbprint,
    new_client_secret,
    parse_client_secret,
    public_jwk,
)
from connector.sdk.interface import PlaintextSecret

CredentialOptions = resource_pb2.CredentialOptions

# RFC 8037 appendix A.1/A.3: an Ed25519 key and its RFC 7638 thumbprint (base64url).
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"

# RFC 7638 section 3.1: the example RSA key and its thumbprint (base64url).
RFC7638_JWK = {
    "kty": "RSA",
    "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWK"
        "RXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMic"
        "AtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3"
        "XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    ),
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_hex(text: str) -> str:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).hex()


def secret_for(jwk: object, prefix: str = "secret-token:conductorone.com:v1:") -> str:
    return prefix + b64url(json.dumps(jwk).encode())


def oracle_thumbprint(jwk: dict[str, str]) -> str:
    """jwcrypto's independent RFC 7638 implementation, as lowercase hex."""
    return b64url_hex(jose_jwk.JWK(**jwk).thumbprint())


def assert_clean(exc: BaseException, *secret_parts: str) -> None:
    """Neither the message nor a printed traceback carries secret material."""
    rendered = "".join(traceback.format_exception(exc))
    for part in secret_parts:
        assert part not in str(exc)
        assert part not in rendered


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk_config(key: PrivateKey) -> EncryptionConfig:
    return EncryptionConfig(
        provider=PROVIDER_JWK,
        jwk_public_key_config=EncryptionConfig.JWKPublicKeyConfig(
            pub_key=json.dumps(public_jwk(key)).encode()
        ),  # type: ignore[arg-type]
    )


def age_config(recipient: str) -> EncryptionConfig:
    return EncryptionConfig(
        provider=PROVIDER_AGE, age_recipient_config=EncryptionConfig.AgeRecipientConfig(recipient=recipient)
    )


# ---------------------------------------------------------------------------------------------- client secret


def test_parse_client_secret_from_rfc8037_key_uses_thumbprint_as_kid() -> None:
    value = secret_for({"kty": "OKP", "crv": "Ed25519", "d": RFC8037_D, "x": RFC8037_X})
    key = parse_client_secret(value)
    assert key.kid == b64url_hex(RFC8037_THUMBPRINT)
    assert key.public_jwk == {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}
    raw_public = key.private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert b64url(raw_public) == RFC8037_X
    # The key signs, and the signature verifies under the JWK's public key.
    signature = key.private_key.sign(b"assertion")
    ed25519.Ed25519PublicKey.from_public_bytes(raw_public).verify(signature, b"assertion")


def test_parse_client_secret_keeps_explicit_kid_and_ignores_first_two_parts() -> None:
    value = secret_for(
        {"kty": "OKP", "crv": "Ed25519", "d": RFC8037_D, "x": RFC8037_X, "kid": "tenant-key-7"},
        prefix="a:b:v1:",
    )
    key = parse_client_secret(value)
    assert key.kid == "tenant-key-7"
    assert key.public_jwk["kid"] == "tenant-key-7"


def test_new_client_secret_round_trips_through_the_parser() -> None:
    value, key = new_client_secret()
    assert value.startswith("secret-token:conductorone.com:v1:")
    again = parse_client_secret(value)
    assert again.kid == key.kid == oracle_thumbprint(key.public_jwk)
    assert again.public_jwk == key.public_jwk
    _, with_kid = new_client_secret(kid="k1")
    assert with_kid.kid == "k1"


def _malformed_secrets() -> list[tuple[str, str, str]]:
    good = {"kty": "OKP", "crv": "Ed25519", "d": RFC8037_D, "x": RFC8037_X}
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    other_x = b64url(other.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    rsa_jwk = {"kty": "RSA", "n": RFC7638_JWK["n"], "e": "AQAB", "d": RFC8037_D}
    encoded = b64url(json.dumps(good).encode())
    return [
        ("too few parts", "conductorone.com:v1:" + encoded, "form"),
        ("v2", "secret-token:conductorone.com:v2:" + encoded, "version"),
        (
            "padded base64",
            "secret-token:conductorone.com:v1:" + encoded + "=" * (-len(encoded) % 4 or 4),
            "base64",
        ),
        (
            "std alphabet",
            "secret-token:conductorone.com:v1:" + encoded.replace("_", "/").replace("-", "+") + "+/",
            "base64",
        ),
        ("not json", "secret-token:conductorone.com:v1:" + b64url(b"not json " + RFC8037_D.encode()), "JSON"),
        ("json array", secret_for([good]), "JSON"),
        ("public only", secret_for({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}), "public key"),
        ("rsa", secret_for(rsa_jwk), "Ed25519"),
        ("x25519", secret_for({**good, "crv": "X25519"}), "Ed25519"),
        ("missing x", secret_for({"kty": "OKP", "crv": "Ed25519", "d": RFC8037_D}), "'x'"),
        ("short d", secret_for({**good, "d": b64url(b"\x01" * 16)}), "32 bytes"),
        ("mismatched x", secret_for({**good, "x": other_x}), "does not belong"),
        ("kid not string", secret_for({**good, "kid": 7}), "kid"),
    ]


@pytest.mark.parametrize(
    ("label", "value", "why"), _malformed_secrets(), ids=[c[0] for c in _malformed_secrets()]
)
def test_parse_client_secret_rejects_malformed_values_without_leaking(
    label: str, value: str, why: str
) -> None:
    with pytest.raises(CryptoError) as caught:
        parse_client_secret(value)
    message = str(caught.value)
    assert message.startswith("invalid client secret: ")
    assert why in message
    assert_clean(caught.value, value.split(":", 3)[-1], RFC8037_D)


# ------------------------------------------------------------------------------------------------ thumbprints


def test_thumbprint_matches_rfc7638_example() -> None:
    assert jwk_thumbprint(RFC7638_JWK) == b64url_hex(RFC7638_THUMBPRINT)
    assert jwk_thumbprint({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}) == b64url_hex(RFC8037_THUMBPRINT)


def test_thumbprint_agrees_with_jwcrypto_for_each_key_type(rsa_key: rsa.RSAPrivateKey) -> None:
    keys: list[PrivateKey] = [
        ed25519.Ed25519PrivateKey.generate(),
        rsa_key,
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP384R1()),
    ]
    for key in keys:
        jwk = public_jwk(key)
        tp = jwk_thumbprint(jwk)
        assert tp == oracle_thumbprint(jwk)
        assert len(tp) == 64 and tp == tp.lower()
        # Extra members (kid, alg) do not change the thumbprint.
        assert jwk_thumbprint({**jwk, "kid": "x", "alg": "whatever"}) == tp


def test_thumbprint_rejects_unknown_types_and_missing_members() -> None:
    with pytest.raises(CryptoError, match="oct"):
        jwk_thumbprint({"kty": "oct", "k": "c2VjcmV0"})
    with pytest.raises(CryptoError, match="'y'"):
        jwk_thumbprint({"kty": "EC", "crv": "P-256", "x": "AAAA"})


# -------------------------------------------------------------------------------------------------- passwords


def test_generate_password_honours_length_and_minimum_counts() -> None:
    rng = random.Random(1234)
    pools = [string.ascii_uppercase, string.ascii_lowercase, string.digits, "!@#$%^&*", "äöüß", "xyz"]
    for _ in range(300):
        length = rng.randint(8, 64)
        chosen = rng.sample(pools, rng.randint(0, 4))
        budget = length
        constraints: list[tuple[str, int]] = []
        for pool in chosen:
            count = rng.randint(0, min(budget, 6))
            budget -= count
            constraints.append((pool, count))
        password = generate_password(length, constraints)
        assert len(password) == length
        for pool, count in constraints:
            assert sum(ch in pool for ch in password) >= count
        allowed = "".join(pool for pool, _ in constraints) or (
            string.ascii_letters + string.digits + string.punctuation
        )
        assert set(password) <= set(allowed)
        if not constraints:
            for cls in (string.ascii_uppercase, string.ascii_lowercase, string.digits, string.punctuation):
                assert any(ch in cls for ch in password)


def test_generate_password_is_random_and_uses_the_whole_union() -> None:
    passwords = {generate_password(16, [("ab", 1), ("01", 1)]) for _ in range(50)}
    assert len(passwords) == 50
    assert set("".join(passwords)) == set("ab01")


@pytest.mark.parametrize(
    ("length", "constraints", "why"),
    [
        (7, [], "between 8 and 64"),
        (65, [], "between 8 and 64"),
        (10, [("abc", 6), ("123", 5)], "at least 11"),
        (10, [("", 1)], "empty character set"),
        (10, [("abc", -1)], "negative"),
    ],
)
def test_generate_password_rejects_impossible_requests(
    length: int, constraints: list[tuple[str, int]], why: str
) -> None:
    with pytest.raises(CryptoError, match=why):
        generate_password(length, constraints)


# ------------------------------------------------------------------------------------------------- encryption


def _secret() -> PlaintextSecret:
    return PlaintextSecret(
        name="password", value=b"S3cret-Plaintext!", description="initial", schema="string"
    )


def test_encrypt_to_ed25519_jwk_is_base64_age_to_ssh_ed25519() -> None:
    recipient = ed25519.Ed25519PrivateKey.generate()
    (data,) = CredentialHelper().encrypt([_secret()], [jwk_config(recipient)])
    assert data.provider == PROVIDER_JWK
    assert list(data.key_ids) == [oracle_thumbprint(public_jwk(recipient))]
    assert data.key_id == data.key_ids[0]
    assert (data.name, data.description, data.schema) == ("password", "initial", "string")
    raw = base64.b64decode(data.encrypted_bytes, validate=True)
    assert raw.startswith(b"age-encryption.org/v1\n-> ssh-ed25519 ")
    assert b"S3cret" not in data.encrypted_bytes and b"S3cret" not in raw
    assert decrypt_encrypted_data(data, recipient) == b"S3cret-Plaintext!"
    with pytest.raises(CryptoError, match="age decryption failed"):
        decrypt_encrypted_data(data, ed25519.Ed25519PrivateKey.generate())


def test_encrypt_to_rsa_jwk_is_base64_age_to_ssh_rsa(rsa_key: rsa.RSAPrivateKey) -> None:
    (data,) = CredentialHelper().encrypt([_secret()], [jwk_config(rsa_key)])
    assert list(data.key_ids) == [oracle_thumbprint(public_jwk(rsa_key))]
    raw = base64.b64decode(data.encrypted_bytes, validate=True)
    assert raw.startswith(b"age-encryption.org/v1\n-> ssh-rsa ")
    # The file is a plain age file: a stock age implementation decrypts it with the OpenSSH key.
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    assert pyrage.decrypt(raw, [pyrage.ssh.Identity.from_buffer(pem)]) == b"S3cret-Plaintext!"
    assert decrypt_encrypted_data(data, rsa_key) == b"S3cret-Plaintext!"


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1()], ids=["P-256", "P-384"])
def test_encrypt_to_ec_jwk_is_base64_compact_jwe(curve: ec.EllipticCurve) -> None:
    recipient = ec.generate_private_key(curve)
    (data,) = CredentialHelper().encrypt([_secret()], [jwk_config(recipient)])
    assert list(data.key_ids) == [oracle_thumbprint(public_jwk(recipient))]
    compact = base64.b64decode(data.encrypted_bytes, validate=True).decode()
    parts = compact.split(".")
    assert len(parts) == 5 and parts[1] == ""  # ECDH-ES direct agreement: no encrypted key
    header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    assert (header["alg"], header["enc"]) == ("ECDH-ES", "A256GCM")
    assert decrypt_encrypted_data(data, recipient) == b"S3cret-Plaintext!"
    with pytest.raises(CryptoError, match="JWE decryption failed"):
        decrypt_encrypted_data(data, ec.generate_private_key(curve))


def test_encrypt_to_age_recipients_is_a_raw_age_file() -> None:
    identity = pyrage.x25519.Identity.generate()
    native = str(identity.to_public())
    ssh_key = ed25519.Ed25519PrivateKey.generate()
    ssh_line = (
        ssh_key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    first, second = CredentialHelper().encrypt([_secret()], [age_config(native), age_config(ssh_line)])
    for data, recipient in ((first, native), (second, ssh_line)):
        assert data.provider == PROVIDER_AGE
        assert list(data.key_ids) == [hashlib.sha256(recipient.encode()).hexdigest()]
        assert data.key_id == ""
        assert data.encrypted_bytes.startswith(b"age-encryption.org/v1\n")
    assert pyrage.decrypt(first.encrypted_bytes, [identity]) == b"S3cret-Plaintext!"
    assert decrypt_encrypted_data(second, ssh_key) == b"S3cret-Plaintext!"


def test_encrypt_produces_one_entry_per_secret_and_config_secret_major(rsa_key: rsa.RSAPrivateKey) -> None:
    recipients: list[PrivateKey] = [
        ed25519.Ed25519PrivateKey.generate(),
        rsa_key,
        ec.generate_private_key(ec.SECP256R1()),
    ]
    secrets = [PlaintextSecret(name=f"s{i}", value=f"value-{i}".encode()) for i in range(2)]
    out = CredentialHelper().encrypt(secrets, [jwk_config(k) for k in recipients])
    assert [d.name for d in out] == ["s0", "s0", "s0", "s1", "s1", "s1"]
    for index, data in enumerate(out):
        key = recipients[index % 3]
        assert decrypt_encrypted_data(data, key) == f"value-{index // 3}".encode()
    assert CredentialHelper().encrypt(secrets, []) == []


@pytest.mark.parametrize(
    ("config", "why"),
    [
        (
            EncryptionConfig(
                jwk_public_key_config=EncryptionConfig.JWKPublicKeyConfig(
                    pub_key=json.dumps({"kty": "OKP", "crv": "X25519", "x": RFC8037_X}).encode()
                )
            ),
            "OKP/'X25519'",
        ),
        (
            EncryptionConfig(
                jwk_public_key_config=EncryptionConfig.JWKPublicKeyConfig(
                    pub_key=json.dumps({"kty": "oct", "k": "c2VjcmV0"}).encode()
                )
            ),
            "'oct'",
        ),
        (
            EncryptionConfig(
                jwk_public_key_config=EncryptionConfig.JWKPublicKeyConfig(
                    pub_key=json.dumps({"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"}).encode()
                )
            ),
            "EC/'secp256k1'",
        ),
        (
            EncryptionConfig(
                jwk_public_key_config=EncryptionConfig.JWKPublicKeyConfig(
                    pub_key=json.dumps({"kty": "EC", "crv": "P-256", "x": "AQ", "y": "Ag"}).encode()
                )
            ),
            "not describe a point",
        ),
        (
            EncryptionConfig(jwk_public_key_config=EncryptionConfig.JWKPublicKeyConfig(pub_key=b"{nope")),
            "JSON",
        ),
        (age_config("age1notarealrecipient"), "invalid age recipient"),
        (age_config(" age1x"), "whitespace"),
        (age_config("AGE-PLUGIN-FOO"), "unsupported age recipient"),
        (EncryptionConfig(provider=PROVIDER_JWK), "no recipient"),
        (
            EncryptionConfig(
                provider="baton/other/v1",
                age_recipient_config=EncryptionConfig.AgeRecipientConfig(recipient="age1x"),
            ),
            "baton/other/v1",
        ),
    ],
)
def test_encrypt_rejects_unusable_recipients(config: EncryptionConfig, why: str) -> None:
    helper = CredentialHelper()
    with pytest.raises(InvalidCredentialRequest, match=why) as caught:
        helper.encrypt([_secret()], [config])
    assert str(caught.value).startswith("encryption config 0: ")
    assert "S3cret" not in str(caught.value)
    with pytest.raises(InvalidCredentialRequest, match=why):
        helper.check_configs([config])


def test_encrypt_rejects_rsa_keys_too_small_for_age() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(InvalidCredentialRequest, match="1024 bits"):
        CredentialHelper().encrypt([_secret()], [jwk_config(small)])


# ---------------------------------------------------------------------------------------------------- resolve


def test_resolve_simple_options() -> None:
    helper = CredentialHelper()
    unset = helper.resolve(CredentialOptions(), [])
    assert (unset.kind, unset.password) == ("no_password", None)
    no_pw = helper.resolve(
        CredentialOptions(no_password=CredentialOptions.NoPassword(), force_change_at_next_login=True), []
    )
    assert (no_pw.kind, no_pw.force_change_at_next_login) == ("no_password", True)
    sso = helper.resolve(CredentialOptions(sso=CredentialOptions.SSO(sso_provider="okta")), [])
    assert (sso.kind, sso.sso_provider, sso.password) == ("sso", "okta", None)


def test_resolve_random_password_follows_the_request() -> None:
    options = CredentialOptions(
        random_password=CredentialOptions.RandomPassword(
            length=20,
            constraints=[
                resource_pb2.PasswordConstraint(char_set="0123456789", min_count=5),
                resource_pb2.PasswordConstraint(char_set="ABC", min_count=3),
            ],
        ),
        force_change_at_next_login=True,
    )
    creds = CredentialHelper().resolve(options, [])
    assert creds.kind == "random_password" and creds.force_change_at_next_login
    assert creds.password is not None and len(creds.password) == 20
    assert sum(c.isdigit() for c in creds.password) >= 5
    assert sum(c in "ABC" for c in creds.password) >= 3
    assert set(creds.password) <= set("0123456789ABC")

    too_short = CredentialOptions(random_password=CredentialOptions.RandomPassword(length=4))
    with pytest.raises(InvalidCredentialRequest, match="between 8 and 64"):
        CredentialHelper().resolve(too_short, [])


@pytest.mark.parametrize("kid", [None, "explicit-kid"])
def test_resolve_decrypts_an_encrypted_password(kid: str | None) -> None:
    _, key = new_client_secret(kid=kid)
    options = encrypt_password_for(key, "Correct horse ✓ battery")
    options.force_change_at_next_login = True
    (entry,) = options.encrypted_password.encrypted_passwords
    assert list(entry.key_ids) == [key.kid] and entry.provider == PROVIDER_JWK
    assert b"horse" not in entry.encrypted_bytes
    creds = CredentialHelper(key).resolve(options, [])
    assert creds.kind == "encrypted_password"
    assert creds.password == "Correct horse ✓ battery"
    assert creds.force_change_at_next_login


def _c1_style_entry(key: ClientSecretKey, password: bytes, key_ids: list[str]) -> EncryptedData:
    """Built the way ConductorOne does it, without the module under test: age to the ssh-ed25519
    recipient of the client-secret public key, as standard base64 text."""
    x = base64.urlsafe_b64decode(key.public_jwk["x"] + "=")
    line = (
        ed25519.Ed25519PublicKey.from_public_bytes(x)
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    ciphertext = pyrage.encrypt(password, [pyrage.ssh.Recipient.from_str(line)])
    return EncryptedData(provider=PROVIDER_JWK, key_ids=key_ids, encrypted_bytes=base64.b64encode(ciphertext))


def test_resolve_picks_the_entry_for_our_kid_and_ignores_others() -> None:
    _, ours = new_client_secret()
    _, theirs = new_client_secret()
    options = CredentialOptions(
        encrypted_password=CredentialOptions.EncryptedPassword(
            encrypted_passwords=[
                _c1_style_entry(theirs, b"not-for-us", [theirs.kid]),
                _c1_style_entry(ours, b"for-us-1234", ["unrelated", ours.kid]),
            ]
        )
    )
    assert CredentialHelper(ours).resolve(options, []).password == "for-us-1234"
    assert CredentialHelper(theirs).resolve(options, []).password == "not-for-us"


def test_resolve_encrypted_password_errors() -> None:
    _, ours = new_client_secret()
    _, theirs = new_client_secret()
    for_theirs = encrypt_password_for(theirs, "hunter2-hunter2")
    with pytest.raises(
        InvalidCredentialRequest, match=f"no encrypted password matched client secret key id {ours.kid}"
    ):
        CredentialHelper(ours).resolve(for_theirs, [])

    for_ours = encrypt_password_for(ours, "hunter2-hunter2")
    recipient_config = jwk_config(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(InvalidCredentialRequest, match="encryption configs must not be supplied"):
        CredentialHelper(ours).resolve(for_ours, [recipient_config])

    with pytest.raises(InvalidCredentialRequest, match=r"need the client secret \(BATON_CLIENT_SECRET\)"):
        CredentialHelper().resolve(for_ours, [])

    empty = CredentialOptions(encrypted_password=CredentialOptions.EncryptedPassword())
    with pytest.raises(InvalidCredentialRequest, match="no encrypted passwords"):
        CredentialHelper(ours).resolve(empty, [])

    # Labelled with our kid but sealed to someone else's key: a decryption failure, not a bad request.
    mislabelled = CredentialOptions(
        encrypted_password=CredentialOptions.EncryptedPassword(
            encrypted_passwords=[_c1_style_entry(theirs, b"hunter2-hunter2", [ours.kid])]
        )
    )
    with pytest.raises(CryptoError, match="age decryption failed") as caught:
        CredentialHelper(ours).resolve(mislabelled, [])
    assert not isinstance(caught.value, InvalidCredentialRequest)
    assert_clean(caught.value, "hunter2")

    garbled = CredentialOptions(
        encrypted_password=CredentialOptions.EncryptedPassword(
            encrypted_passwords=[
                EncryptedData(provider=PROVIDER_JWK, key_ids=[ours.kid], encrypted_bytes=b"%%%")
            ]
        )
    )
    with pytest.raises(CryptoError, match="not standard base64"):
        CredentialHelper(ours).resolve(garbled, [])

    other_provider = CredentialOptions(
        encrypted_password=CredentialOptions.EncryptedPassword(
            encrypted_passwords=[
                EncryptedData(provider="baton/age/v1", key_ids=[ours.kid], encrypted_bytes=b"x")
            ]
        )
    )
    with pytest.raises(InvalidCredentialRequest, match="unsupported provider 'baton/age/v1'"):
        CredentialHelper(ours).resolve(other_provider, [])


def test_resolve_refuses_credential_kinds_account_creation_cannot_use() -> None:
    options = CredentialOptions(api_key=CredentialOptions.ApiKey(scopes=["read"]))
    with pytest.raises(InvalidCredentialRequest, match="api_key is not supported"):
        CredentialHelper().resolve(options, [])


def test_public_jwk_accepts_public_keys_and_pads_ec_coordinates() -> None:
    key = ec.generate_private_key(ec.SECP521R1())
    jwk = public_jwk(key.public_key())
    assert jwk["crv"] == "P-521"
    assert len(base64.urlsafe_b64decode(jwk["x"] + "==")) == 66
    assert jwk == public_jwk(key)
