"""Client credentials as the tenant issues them, and verification of the client assertion.

Deliberately independent of `connector.sdk.crypto` and `connector.service`: the fake tenant stands in for
ConductorOne, so it implements the formats from the spec on its own and a client-side mistake shows up as a
rejected token instead of being shared by both ends.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SECRET_PREFIX = "secret-token:conductorone.com:v1:"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Clock skew the tenant tolerates on nbf/exp (the client's window is already +-120 s).
ALLOWED_SKEW = 30


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if any(c in text for c in "=+/ \n"):
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class IssuedSecret:
    """One client secret: the string handed to the operator and the public key the tenant keeps."""

    secret: str
    public_key: Ed25519PublicKey
    kid: str | None


def new_client_name() -> str:
    words = ("strange", "quiet", "brave", "amber", "swift", "lucky")
    animals = ("hydra", "otter", "falcon", "lynx", "heron", "badger")
    return f"{secrets.choice(words)}-{secrets.choice(animals)}-{secrets.randbelow(90000) + 10000}"


def issue_secret(*, with_kid: bool = False) -> IssuedSecret:
    """A fresh Ed25519 client secret in ConductorOne's `secret-token:...:v1:<b64url JWK>` form."""
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes_raw()
    public = key.public_key()
    jwk: dict[str, str] = {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url(public.public_bytes(Encoding.Raw, PublicFormat.Raw)),
        "d": b64url(seed),
    }
    kid = None
    if with_kid:
        kid = secrets.token_hex(16)
        jwk["kid"] = kid
    text = json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()
    return IssuedSecret(SECRET_PREFIX + b64url(text), public, kid)


class InvalidAssertion(Exception):
    """The client assertion is not acceptable; the message becomes the 401 error_description."""


def verify_assertion(
    assertion: str,
    *,
    client_id: str,
    audience: str,
    keys: list[IssuedSecret],
    now: float | None = None,
) -> dict[str, Any]:
    """Check the JWS as ConductorOne does: EdDSA only, signature by a registered key, iss/sub/aud/nbf/exp."""
    parts = assertion.split(".")
    if len(parts) != 3:
        raise InvalidAssertion("client_assertion is not a compact JWS")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except (ValueError, binascii.Error, UnicodeDecodeError) as err:
        raise InvalidAssertion(f"client_assertion is malformed: {err}") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidAssertion("client_assertion header and payload must be JSON objects")
    if header.get("alg") != "EdDSA":
        raise InvalidAssertion(f"unsupported alg {header.get('alg')!r}")
    if "crit" in header:
        raise InvalidAssertion("crit headers are not supported")
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    kid = header.get("kid")
    candidates = [k for k in keys if kid is None or k.kid is None or k.kid == kid]
    for key in candidates:
        try:
            key.public_key.verify(signature, signing_input)
            matched = key
            break
        except InvalidSignature:
            continue
    else:
        raise InvalidAssertion("client_assertion signature does not verify with the registered key")
    if claims.get("iss") != client_id:
        raise InvalidAssertion("iss must be the client id")
    if claims.get("sub") != client_id:
        raise InvalidAssertion("sub must be the client id")
    aud = claims.get("aud")
    # Current SDKs send a string, older ones a one-element list; both are accepted by the tenant.
    if not (aud == audience or (isinstance(aud, list) and audience in aud)):
        raise InvalidAssertion(f"aud must be {audience!r}")
    t = time.time() if now is None else now
    nbf, exp = claims.get("nbf"), claims.get("exp")
    if not isinstance(nbf, int) or isinstance(nbf, bool) or not isinstance(exp, int) or isinstance(exp, bool):
        raise InvalidAssertion("nbf and exp must be integer Unix times")
    if nbf > t + ALLOWED_SKEW:
        raise InvalidAssertion("client_assertion is not valid yet (nbf)")
    if exp < t - ALLOWED_SKEW:
        raise InvalidAssertion("client_assertion has expired (exp)")
    if exp - nbf > 600:
        raise InvalidAssertion("client_assertion lifetime is too long")
    return {"header": header, "claims": claims, "key": matched}
