"""Credential material: the client secret, generated passwords, and encrypting secrets for ConductorOne.

Three jobs, all from service-mode.md §2.2/§7.5 and c1z-and-sync.md §3.3:

* parse `BATON_CLIENT_SECRET` (`secret-token:conductorone.com:v1:<base64url JWK>`) into an Ed25519 key and
  its key id (the JWK `kid`, else the RFC 7638 SHA-256 thumbprint in lowercase hex);
* turn a CreateAccount `CredentialOptions` into `AccountCredentials` (random passwords generated here,
  encrypted passwords decrypted with the client-secret key);
* encrypt every plaintext secret a connector returns once per `EncryptionConfig` recipient, byte-compatible
  with the Go SDK (`baton/jwk/v1`: age to an SSH-style recipient for Ed25519/RSA, compact JWE ECDH-ES+A256GCM
  for EC, stored as standard base64 text; `baton/age/v1`: a binary age file).

Error messages name the problem but never include key material, ciphertext or plaintext, because callers
forward them to logs and to ConductorOne.

The last section holds test/demo utilities (`new_client_secret`, `encrypt_password_for`,
`decrypt_encrypted_data`, `public_jwk`) that play ConductorOne's side; production code does not call them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import pyrage
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwcrypto import jwe as jose_jwe
from jwcrypto import jwk as jose_jwk

from connector.pb.c1.connector.v2 import resource_pb2
from connector.sdk.interface import AccountCredentials, PlaintextSecret

EncryptionConfig = resource_pb2.EncryptionConfig
EncryptedData = resource_pb2.EncryptedData

PROVIDER_JWK = "baton/jwk/v1"
PROVIDER_AGE = "baton/age/v1"
CLIENT_SECRET_PREFIX = "secret-token:conductorone.com:v1:"

PublicKey: TypeAlias = ed25519.Ed25519PublicKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey
PrivateKey: TypeAlias = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class CryptoError(Exception):
    """A credential-material problem. The message names it and never carries secret material."""


class InvalidCredentialRequest(CryptoError):
    """The request itself is wrong (bad options, unusable recipient, no matching key): INVALID_ARGUMENT."""


# --------------------------------------------------------------------------------------------------------
# base64 helpers: strict, so that a mangled value is reported instead of silently half-decoded.

_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")
_B64STD_RE = re.compile(rb"[A-Za-z0-9+/]*={0,2}")


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    """RFC 4648 §5 without padding (Go's RawURLEncoding, which also skips CR/LF). Raises ValueError."""
    text = text.replace("\r", "").replace("\n", "")
    if not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64url_member(jwk: Mapping[str, object], name: str, what: str) -> bytes:
    """A JWK member holding base64url bytes. Go JOSE tolerates trailing '=' here, so do we."""
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise CryptoError(f"{what} is missing the {name!r} member")
    try:
        return _b64url_decode(value.rstrip("="))
    except ValueError:
        raise CryptoError(f"{what} member {name!r} is not base64url") from None


def _b64std_decode(data: bytes) -> bytes:
    if len(data) % 4 or not _B64STD_RE.fullmatch(data):
        raise ValueError("not standard base64")
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error:
        raise ValueError("not standard base64") from None


def _short(value: object) -> str:
    """A user-supplied label (kty, crv, provider) for an error message, bounded in size."""
    text = str(value)
    return repr(text if len(text) <= 40 else text[:40] + "...")


# --------------------------------------------------------------------------------------------------------
# JWK thumbprints and conversions

_THUMBPRINT_MEMBERS: dict[str, tuple[str, ...]] = {
    "OKP": ("crv", "kty", "x"),
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
}

_EC_CURVES: dict[str, tuple[ec.EllipticCurve, int]] = {
    "P-256": (ec.SECP256R1(), 32),
    "P-384": (ec.SECP384R1(), 48),
    "P-521": (ec.SECP521R1(), 66),
}
_EC_CURVE_NAMES = {curve.name: (crv, size) for crv, (curve, size) in _EC_CURVES.items()}


def jwk_thumbprint(jwk: Mapping[str, object]) -> str:
    """RFC 7638 SHA-256 thumbprint, lowercase hex (the Go SDK's key id): the required members of the key
    type, sorted, serialized without whitespace."""
    kty = jwk.get("kty")
    members = _THUMBPRINT_MEMBERS.get(kty) if isinstance(kty, str) else None
    if members is None:
        raise CryptoError(f"cannot compute a JWK thumbprint for key type {_short(kty)}")
    required: dict[str, str] = {}
    for name in members:
        value = jwk.get(name)
        if not isinstance(value, str) or not value:
            raise CryptoError(f"JWK of type {kty} is missing the {name!r} member")
        required[name] = value
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _int_to_b64url(value: int, size: int | None = None) -> str:
    length = size if size is not None else max(1, (value.bit_length() + 7) // 8)
    return _b64url_encode(value.to_bytes(length, "big"))


def _public_key_from_jwk(jwk: Mapping[str, object]) -> PublicKey:
    """The public key a recipient JWK describes (private members, if any, are ignored)."""
    kty = jwk.get("kty")
    crv = jwk.get("crv")
    if kty == "OKP":
        if crv != "Ed25519":
            raise CryptoError(f"unsupported JWK key type OKP/{_short(crv)} (supported: Ed25519, RSA, EC)")
        x = _b64url_member(jwk, "x", "Ed25519 JWK")
        if len(x) != 32:
            raise CryptoError("Ed25519 JWK member 'x' must be 32 bytes")
        return ed25519.Ed25519PublicKey.from_public_bytes(x)
    if kty == "RSA":
        n = int.from_bytes(_b64url_member(jwk, "n", "RSA JWK"), "big")
        e = int.from_bytes(_b64url_member(jwk, "e", "RSA JWK"), "big")
        try:
            return rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError:
            raise CryptoError("RSA JWK does not describe a valid RSA public key") from None
    if kty == "EC":
        if not isinstance(crv, str) or crv not in _EC_CURVES:
            raise CryptoError(
                f"unsupported JWK key type EC/{_short(crv)} (supported curves: P-256, P-384, P-521)"
            )
        curve, _size = _EC_CURVES[crv]
        x_int = int.from_bytes(_b64url_member(jwk, "x", "EC JWK"), "big")
        y_int = int.from_bytes(_b64url_member(jwk, "y", "EC JWK"), "big")
        try:
            return ec.EllipticCurvePublicNumbers(x_int, y_int, curve).public_key()
        except ValueError:
            raise CryptoError(f"EC JWK does not describe a point on {crv}") from None
    raise CryptoError(f"unsupported JWK key type {_short(kty)} (supported: OKP/Ed25519, RSA, EC)")


# --------------------------------------------------------------------------------------------------------
# Typed wrappers around pyrage (age) and jwcrypto (JWE), which ship no type information.


def _openssh_public_line(key: ed25519.Ed25519PublicKey | rsa.RSAPublicKey) -> str:
    """`ssh-ed25519 AAAA...` / `ssh-rsa AAAA...`: the age SSH recipient the Go SDK derives from the key."""
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode(
        "ascii"
    )


def _ssh_recipient(key: ed25519.Ed25519PublicKey | rsa.RSAPublicKey) -> object:
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        raise CryptoError(f"RSA key of {key.key_size} bits is too small for age ssh-rsa (at least 2048 bits)")
    try:
        recipient: object = pyrage.ssh.Recipient.from_str(_openssh_public_line(key))
    except pyrage.RecipientError:
        raise CryptoError("the key cannot be used as an age SSH recipient") from None
    return recipient


def _ssh_identity(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> object:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    try:
        identity: object = pyrage.ssh.Identity.from_buffer(pem)
    except pyrage.IdentityError:
        raise CryptoError("the key cannot be used as an age SSH identity") from None
    return identity


def _age_recipient_from_text(text: str) -> object:
    """One canonical age recipient string: native X25519 (`age1...`) or SSH (`ssh-ed25519`/`ssh-rsa`)."""
    if not text:
        raise CryptoError("age recipient is empty")
    if text.strip() != text or "\n" in text or "\r" in text:
        raise CryptoError("age recipient must be a single recipient string without surrounding whitespace")
    try:
        if text.startswith("age1"):
            recipient: object = pyrage.x25519.Recipient.from_str(text)
        elif text.startswith(("ssh-ed25519 ", "ssh-rsa ")):
            recipient = pyrage.ssh.Recipient.from_str(text)
        else:
            raise CryptoError("unsupported age recipient (expected age1..., ssh-ed25519 or ssh-rsa)")
    except pyrage.RecipientError:
        raise CryptoError("invalid age recipient") from None
    return recipient


def _age_encrypt(plaintext: bytes, recipient: object) -> bytes:
    try:
        ciphertext: bytes = pyrage.encrypt(plaintext, [recipient])
    except pyrage.EncryptError:
        raise CryptoError("age encryption failed") from None
    return ciphertext


def _age_decrypt(ciphertext: bytes, identity: object) -> bytes:
    try:
        plaintext: bytes = pyrage.decrypt(ciphertext, [identity])
    except pyrage.DecryptError:
        raise CryptoError("age decryption failed (not an age file for this key, or corrupted)") from None
    return plaintext


def _jwe_encrypt(key: ec.EllipticCurvePublicKey, plaintext: bytes) -> str:
    token = jose_jwe.JWE(plaintext, protected=json.dumps({"alg": "ECDH-ES", "enc": "A256GCM"}))
    token.add_recipient(jose_jwk.JWK.from_pyca(key))
    compact: str = token.serialize(compact=True)
    return compact


def _jwe_decrypt(key: ec.EllipticCurvePrivateKey, compact: str) -> bytes:
    token = jose_jwe.JWE()
    try:
        token.deserialize(compact, key=jose_jwk.JWK.from_pyca(key))
    except Exception:  # jwcrypto raises a zoo of types (InvalidJWEData, ValueError, KeyError...)
        raise CryptoError("JWE decryption failed (not a JWE for this key, or corrupted)") from None
    header: Any = token.jose_header
    if header.get("alg") != "ECDH-ES" or header.get("enc") != "A256GCM":
        raise CryptoError("JWE is not ECDH-ES with A256GCM")
    plaintext: bytes = token.payload
    return plaintext


# --------------------------------------------------------------------------------------------------------
# Client secret (service-mode.md §2.2)


@dataclass(frozen=True)
class ClientSecretKey:
    """The Ed25519 key inside BATON_CLIENT_SECRET. `public_jwk` holds kty/crv/x (and kid when the secret
    had one); `kid` is that kid, else the lowercase hex RFC 7638 thumbprint."""

    private_key: ed25519.Ed25519PrivateKey
    public_jwk: dict[str, str]
    kid: str


def _invalid_secret(why: str) -> CryptoError:
    return CryptoError(f"invalid client secret: {why}")


def parse_client_secret(value: str) -> ClientSecretKey:
    """Parse `secret-token:conductorone.com:v1:<base64url-no-padding(JWK)>` exactly as the Go SDK does:
    at most 4 colon-separated parts, only part 2 (`v1`) checked, then an Ed25519 private JWK."""
    parts = value.split(":", 3)
    if len(parts) < 4:
        raise _invalid_secret("expected the form secret-token:conductorone.com:v1:<key>")
    if parts[2] != "v1":
        raise _invalid_secret("unsupported format version (expected v1)")
    try:
        raw = _b64url_decode(parts[3])
    except ValueError:
        raise _invalid_secret("the key part is not unpadded base64url") from None
    try:
        jwk = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _invalid_secret("the key part does not decode to a JWK (JSON)") from None
    if not isinstance(jwk, dict):
        raise _invalid_secret("the key part does not decode to a JWK (JSON object)")
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise _invalid_secret("the key must be an Ed25519 (OKP) JWK")
    if "d" not in jwk:
        raise _invalid_secret("the key is a public key; a private key (with 'd') is required")
    try:
        d = _b64url_member(jwk, "d", "the key")
        x = _b64url_member(jwk, "x", "the key")
    except CryptoError as exc:
        raise _invalid_secret(str(exc)) from None
    if len(d) != 32 or len(x) != 32:
        raise _invalid_secret("Ed25519 'd' and 'x' must each be 32 bytes")
    private_key = ed25519.Ed25519PrivateKey.from_private_bytes(d)
    derived = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    # Go signs with d||x without checking that they belong together, which yields signatures the
    # tenant rejects; failing here gives the user a message they can act on instead.
    if not secrets.compare_digest(derived, x):
        raise _invalid_secret("the public key 'x' does not belong to the private key 'd'")
    kid_member = jwk.get("kid")
    if kid_member is not None and not isinstance(kid_member, str):
        raise _invalid_secret("'kid' must be a string")
    public = {"kty": "OKP", "crv": "Ed25519", "x": _b64url_encode(x)}
    if kid_member:
        public["kid"] = kid_member
    kid = kid_member or jwk_thumbprint(public)
    return ClientSecretKey(private_key=private_key, public_jwk=public, kid=kid)


# --------------------------------------------------------------------------------------------------------
# Passwords

_UPPER = string.ascii_uppercase
_LOWER = string.ascii_lowercase
_DIGITS = string.digits
_SYMBOLS = string.punctuation  # the same 32 ASCII symbols the Go SDK uses
_DEFAULT_CLASSES = (_UPPER, _LOWER, _DIGITS, _SYMBOLS)
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 64


def _unique_chars(text: str) -> str:
    return "".join(dict.fromkeys(text))


def generate_password(length: int, constraints: Sequence[tuple[str, int]]) -> str:
    """A random password from the `secrets` CSPRNG. Each (char_set, min_count) contributes at least
    min_count characters of its set; the rest come from the union of the sets. Without usable constraints
    the default set (letters, digits, ASCII symbols) is used with at least one of each class, because
    upstream password policies commonly demand that."""
    if isinstance(length, bool) or not MIN_PASSWORD_LENGTH <= length <= MAX_PASSWORD_LENGTH:
        raise CryptoError(
            f"password length must be between {MIN_PASSWORD_LENGTH} and {MAX_PASSWORD_LENGTH}, got {length}"
        )
    required: list[tuple[str, int]] = []
    for index, (char_set, min_count) in enumerate(constraints, start=1):
        if min_count < 0:
            raise CryptoError(f"password constraint {index} has a negative minimum count")
        chars = _unique_chars(char_set)
        if not chars:
            if min_count > 0:
                raise CryptoError(
                    f"password constraint {index} requires characters from an empty character set"
                )
            continue
        required.append((chars, min_count))
    if not required:
        required = [(chars, 1) for chars in _DEFAULT_CLASSES]
    total = sum(count for _chars, count in required)
    if total > length:
        raise CryptoError(
            f"password constraints require at least {total} characters but the length is {length}"
        )
    union = _unique_chars("".join(chars for chars, _count in required))
    picked = [secrets.choice(chars) for chars, count in required for _ in range(count)]
    picked.extend(secrets.choice(union) for _ in range(length - total))
    secrets.SystemRandom().shuffle(picked)
    return "".join(picked)


# --------------------------------------------------------------------------------------------------------
# Recipients and the helper the runtime uses


@dataclass(frozen=True)
class _Recipient:
    provider: str
    key_ids: tuple[str, ...]
    key_id: str
    seal: Callable[[bytes], bytes]


def _jwk_recipient(pub_key: bytes) -> _Recipient:
    try:
        jwk = json.loads(pub_key)
    except (ValueError, UnicodeDecodeError):
        raise CryptoError("jwk_public_key_config.pub_key is not a JWK (JSON)") from None
    if not isinstance(jwk, dict):
        raise CryptoError("jwk_public_key_config.pub_key is not a JWK (JSON object)")
    key = _public_key_from_jwk(jwk)
    kid = jwk_thumbprint(jwk)
    if isinstance(key, ec.EllipticCurvePublicKey):
        ec_key = key

        def seal(plaintext: bytes) -> bytes:
            return base64.b64encode(_jwe_encrypt(ec_key, plaintext).encode("ascii"))

    else:
        age_recipient = _ssh_recipient(key)

        def seal(plaintext: bytes) -> bytes:
            return base64.b64encode(_age_encrypt(plaintext, age_recipient))

    return _Recipient(provider=PROVIDER_JWK, key_ids=(kid,), key_id=kid, seal=seal)


def _age_recipient(text: str) -> _Recipient:
    age_recipient = _age_recipient_from_text(text)
    key_id = hashlib.sha256(text.encode("utf-8")).hexdigest()

    def seal(plaintext: bytes) -> bytes:
        return _age_encrypt(plaintext, age_recipient)

    return _Recipient(provider=PROVIDER_AGE, key_ids=(key_id,), key_id="", seal=seal)


def _recipient(config: EncryptionConfig, index: int) -> _Recipient:
    which = config.WhichOneof("config")
    try:
        if which == "jwk_public_key_config":
            if config.provider not in ("", PROVIDER_JWK):
                raise CryptoError(f"provider {_short(config.provider)} does not take a JWK public key")
            return _jwk_recipient(config.jwk_public_key_config.pub_key)
        if which == "age_recipient_config":
            if config.provider not in ("", PROVIDER_AGE):
                raise CryptoError(f"provider {_short(config.provider)} does not take an age recipient")
            return _age_recipient(config.age_recipient_config.recipient)
        raise CryptoError("it has no recipient (expected jwk_public_key_config or age_recipient_config)")
    except CryptoError as exc:
        raise InvalidCredentialRequest(f"encryption config {index}: {exc}") from None


class CredentialHelper:
    """Resolves CreateAccount credential options and encrypts secrets for ConductorOne.

    `key` is the parsed BATON_CLIENT_SECRET; without it only encrypted passwords are refused."""

    def __init__(self, key: ClientSecretKey | None = None) -> None:
        self._key = key
        self._identity: object | None = None

    @property
    def key(self) -> ClientSecretKey | None:
        return self._key

    def resolve(
        self, options: resource_pb2.CredentialOptions, encryption_configs: Sequence[EncryptionConfig]
    ) -> AccountCredentials:
        """What the connector should do, decoded. Raises InvalidCredentialRequest for requests that cannot
        be honoured and CryptoError when an encrypted password meant for our key cannot be decrypted."""
        force = options.force_change_at_next_login
        which = options.WhichOneof("options")
        if which is None or which == "no_password":
            return AccountCredentials(kind="no_password", force_change_at_next_login=force)
        if which == "sso":
            return AccountCredentials(
                kind="sso", force_change_at_next_login=force, sso_provider=options.sso.sso_provider
            )
        if which == "random_password":
            spec = options.random_password
            try:
                password = generate_password(
                    spec.length, [(c.char_set, c.min_count) for c in spec.constraints]
                )
            except CryptoError as exc:
                raise InvalidCredentialRequest(f"random_password: {exc}") from None
            return AccountCredentials(
                kind="random_password", password=password, force_change_at_next_login=force
            )
        if which == "encrypted_password":
            password = self._decrypt_password(options.encrypted_password, encryption_configs)
            return AccountCredentials(
                kind="encrypted_password", password=password, force_change_at_next_login=force
            )
        raise InvalidCredentialRequest(f"credential option {which} is not supported when creating an account")

    def _decrypt_password(
        self,
        option: resource_pb2.CredentialOptions.EncryptedPassword,
        encryption_configs: Sequence[EncryptionConfig],
    ) -> str:
        # Whoever chose the password already knows it; encrypting it back to anyone would only leak it.
        if encryption_configs:
            raise InvalidCredentialRequest(
                "encryption configs must not be supplied with an encrypted password"
            )
        if not option.encrypted_passwords:
            raise InvalidCredentialRequest("encrypted_password carries no encrypted passwords")
        if self._key is None:
            raise InvalidCredentialRequest(
                "encrypted passwords need the client secret (BATON_CLIENT_SECRET) to decrypt"
            )
        kid = self._key.kid
        ours = [entry for entry in option.encrypted_passwords if kid in entry.key_ids]
        if not ours:
            raise InvalidCredentialRequest(f"no encrypted password matched client secret key id {kid}")
        usable = [entry for entry in ours if entry.provider in ("", PROVIDER_JWK)]
        if not usable:
            raise InvalidCredentialRequest(
                f"encrypted password for key id {kid} uses unsupported provider {_short(ours[0].provider)}"
            )
        try:
            ciphertext = _b64std_decode(usable[0].encrypted_bytes)
        except ValueError:
            raise CryptoError(f"encrypted password for key id {kid} is not standard base64 text") from None
        plaintext = _age_decrypt(ciphertext, self._age_identity())
        try:
            password = plaintext.decode("utf-8")
        except UnicodeDecodeError:
            raise CryptoError(f"decrypted password for key id {kid} is not UTF-8 text") from None
        if not password:
            raise InvalidCredentialRequest(f"decrypted password for key id {kid} is empty")
        return password

    def _age_identity(self) -> object:
        assert self._key is not None
        if self._identity is None:
            self._identity = _ssh_identity(self._key.private_key)
        return self._identity

    def check_configs(self, configs: Sequence[EncryptionConfig]) -> None:
        """Validate every recipient without encrypting anything, so a caller can refuse a bad request
        (InvalidCredentialRequest) before creating an account whose secret it could not deliver."""
        for index, config in enumerate(configs):
            _recipient(config, index)

    def encrypt(
        self, secrets: Sequence[PlaintextSecret], configs: Sequence[EncryptionConfig]
    ) -> list[EncryptedData]:
        """One EncryptedData per (secret, config), secret-major like the Go SDK. All recipients are
        parsed first so a bad one fails before anything is encrypted."""
        recipients = [_recipient(config, index) for index, config in enumerate(configs)]
        out: list[EncryptedData] = []
        for secret in secrets:
            for recipient in recipients:
                out.append(
                    EncryptedData(
                        provider=recipient.provider,
                        key_id=recipient.key_id,
                        key_ids=recipient.key_ids,
                        name=secret.name,
                        description=secret.description,
                        schema=secret.schema,
                        encrypted_bytes=recipient.seal(secret.value),
                    )
                )
        return out


# --------------------------------------------------------------------------------------------------------
# Test / demo utilities: ConductorOne's side of the exchange (key generation, encrypting a password for
# the connector, decrypting what the connector returned). Used by tests and the fake tenant only.


def public_jwk(key: PrivateKey | PublicKey) -> dict[str, str]:
    """Public JWK (no kid) for an Ed25519 (OKP), RSA or EC (P-256/P-384/P-521) private or public key."""
    public: PublicKey
    if isinstance(key, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        public = key.public_key()
    else:
        public = key
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64url_encode(raw)}
    if isinstance(public, rsa.RSAPublicKey):
        numbers = public.public_numbers()
        return {"kty": "RSA", "n": _int_to_b64url(numbers.n), "e": _int_to_b64url(numbers.e)}
    if isinstance(public, ec.EllipticCurvePublicKey):
        curve = _EC_CURVE_NAMES.get(public.curve.name)
        if curve is None:
            raise CryptoError(f"unsupported EC curve {_short(public.curve.name)}")
        crv, size = curve
        point = public.public_numbers()
        return {
            "kty": "EC",
            "crv": crv,
            "x": _int_to_b64url(point.x, size),
            "y": _int_to_b64url(point.y, size),
        }
    raise CryptoError(f"unsupported key type {type(key).__name__}")


def new_client_secret(kid: str | None = None) -> tuple[str, ClientSecretKey]:
    """A fresh Ed25519 client secret string (`secret-token:conductorone.com:v1:...`) and its parsed key."""
    private_key = ed25519.Ed25519PrivateKey.generate()
    jwk = public_jwk(private_key)
    jwk["d"] = _b64url_encode(
        private_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
    )
    if kid is not None:
        jwk["kid"] = kid
    value = CLIENT_SECRET_PREFIX + _b64url_encode(json.dumps(jwk, separators=(",", ":")).encode("utf-8"))
    return value, parse_client_secret(value)


def encrypt_password_for(key: ClientSecretKey, password: str) -> resource_pb2.CredentialOptions:
    """CredentialOptions as ConductorOne sends them: encrypted_password with one entry for our kid."""
    config = EncryptionConfig(
        provider=PROVIDER_JWK,
        jwk_public_key_config=EncryptionConfig.JWKPublicKeyConfig(
            pub_key=json.dumps(key.public_jwk).encode()
        ),
    )
    (data,) = CredentialHelper().encrypt(
        [PlaintextSecret(name="password", value=password.encode())], [config]
    )
    # The entry is addressed to our kid, which is the secret's explicit kid when it has one rather than
    # the thumbprint the encryptor computed.
    return resource_pb2.CredentialOptions(
        encrypted_password=resource_pb2.CredentialOptions.EncryptedPassword(
            encrypted_passwords=[
                EncryptedData(
                    provider=data.provider,
                    key_id=key.kid,
                    key_ids=[key.kid],
                    name=data.name,
                    encrypted_bytes=data.encrypted_bytes,
                )
            ]
        )
    )


def decrypt_encrypted_data(data: EncryptedData, private_key: PrivateKey) -> bytes:
    """The recipient's side: recover the plaintext of one EncryptedData with the recipient private key."""
    if data.provider == PROVIDER_JWK:
        try:
            ciphertext = _b64std_decode(data.encrypted_bytes)
        except ValueError:
            raise CryptoError("baton/jwk/v1 encrypted_bytes is not standard base64 text") from None
        if isinstance(private_key, ec.EllipticCurvePrivateKey):
            try:
                compact = ciphertext.decode("ascii")
            except UnicodeDecodeError:
                raise CryptoError("baton/jwk/v1 ciphertext for an EC key is not a compact JWE") from None
            return _jwe_decrypt(private_key, compact)
        return _age_decrypt(ciphertext, _ssh_identity(private_key))
    if data.provider == PROVIDER_AGE:
        if isinstance(private_key, ec.EllipticCurvePrivateKey):
            raise CryptoError("baton/age/v1 data cannot be decrypted with an EC key")
        return _age_decrypt(data.encrypted_bytes, _ssh_identity(private_key))
    raise CryptoError(f"unsupported provider {_short(data.provider)}")
