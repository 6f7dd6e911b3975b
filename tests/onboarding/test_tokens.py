"""Bearer JWTs are accepted only when signed by a configured issuer's published key, for our
audience, within their lifetime; discovery and JWKS are fetched once and cached."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from onboarding_app.tokens import InvalidToken, OidcVerifier, bearer_token

AUDIENCE = "fitonfhir-test"


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_a_valid_token_names_the_caller(issuer):
    caller = OidcVerifier([issuer.url], AUDIENCE).verify(issuer.token(sub="patient-42"))
    assert (caller.issuer, caller.subject) == (issuer.url, "patient-42")


def test_discovery_and_keys_are_cached_across_requests(issuer):
    verifier = OidcVerifier([issuer.url], AUDIENCE)
    for _ in range(5):
        verifier.verify(issuer.token())
    assert (issuer.discovery_hits, issuer.jwks_hits) == (1, 1)


def test_an_unknown_kid_refreshes_the_key_set_once(issuer):
    verifier = OidcVerifier([issuer.url], AUDIENCE, refresh_cooldown=0)
    verifier.verify(issuer.token())
    issuer.add_key("k2")  # key rotation at the provider
    assert verifier.verify(issuer.token(kid="k2")).subject == "caller-sub-1"
    assert issuer.jwks_hits == 2


def test_unknown_kids_cannot_force_a_refetch_storm(issuer):
    issuer.add_key("rogue", publish=False)
    verifier = OidcVerifier([issuer.url], AUDIENCE)  # default cooldown: 30 s
    verifier.verify(issuer.token())
    for _ in range(5):
        with pytest.raises(InvalidToken):
            verifier.verify(issuer.token(kid="rogue"))
    assert issuer.jwks_hits == 1


def test_a_token_signed_with_an_unpublished_key_is_refused(issuer):
    issuer.add_key("rogue", publish=False)
    with pytest.raises(InvalidToken, match="No signing key"):
        OidcVerifier([issuer.url], AUDIENCE).verify(issuer.token(kid="rogue"))


def test_a_token_from_another_issuer_is_refused(issuer):
    token = issuer.token(iss="https://evil.example")
    with pytest.raises(InvalidToken, match="not found in the list of authorized identity providers"):
        OidcVerifier([issuer.url], AUDIENCE).verify(token)


def test_the_issuer_must_match_exactly(issuer):
    with pytest.raises(InvalidToken, match="not found"):
        OidcVerifier([issuer.url], AUDIENCE).verify(issuer.token(iss=issuer.url + "/"))


def test_a_token_for_another_audience_is_refused(issuer):
    with pytest.raises(InvalidToken, match="InvalidAudienceError"):
        OidcVerifier([issuer.url], AUDIENCE).verify(issuer.token(audience="someone-else"))


def test_an_expired_token_is_refused_beyond_the_leeway(issuer):
    now = int(time.time())
    verifier = OidcVerifier([issuer.url], AUDIENCE, leeway=60)
    assert verifier.verify(issuer.token(exp=now - 30)).subject  # within leeway
    with pytest.raises(InvalidToken, match="ExpiredSignatureError"):
        verifier.verify(issuer.token(exp=now - 120))


def test_a_token_not_yet_valid_is_refused(issuer):
    with pytest.raises(InvalidToken, match="ImmatureSignatureError"):
        OidcVerifier([issuer.url], AUDIENCE).verify(issuer.token(nbf=int(time.time()) + 600))


def test_a_token_without_expiry_is_refused(issuer):
    with pytest.raises(InvalidToken, match="MissingRequiredClaimError"):
        OidcVerifier([issuer.url], AUDIENCE).verify(issuer.token(exp=None))


def test_an_unsigned_token_is_refused(issuer):
    now = int(time.time())
    claims = {"iss": issuer.url, "sub": "x", "aud": AUDIENCE, "exp": now + 300}
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    with pytest.raises(InvalidToken, match="'none' is not accepted"):
        OidcVerifier([issuer.url], AUDIENCE).verify(unsigned)


def test_a_token_hmac_signed_with_the_public_key_is_refused(issuer):
    public_pem = (
        issuer.keys["k1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    claims = {"iss": issuer.url, "sub": "x", "aud": AUDIENCE, "exp": int(time.time()) + 300}
    header = _b64({"alg": "HS256", "typ": "JWT", "kid": "k1"})
    body = _b64(claims)
    import hashlib
    import hmac

    sig = base64.urlsafe_b64encode(hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest())
    forged = f"{header}.{body}.{sig.rstrip(b'=').decode()}"
    with pytest.raises(InvalidToken, match="'HS256' is not accepted"):
        OidcVerifier([issuer.url], AUDIENCE).verify(forged)


def test_a_tampered_payload_is_refused(issuer):
    header, _, signature = issuer.token().split(".")
    claims = {"iss": issuer.url, "sub": "admin", "aud": AUDIENCE, "exp": int(time.time()) + 300}
    with pytest.raises(InvalidToken, match="InvalidSignatureError"):
        OidcVerifier([issuer.url], AUDIENCE).verify(f"{header}.{_b64(claims)}.{signature}")


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30"])
def test_garbage_is_refused(issuer, garbage):
    with pytest.raises(InvalidToken):
        OidcVerifier([issuer.url], AUDIENCE).verify(garbage)


def test_an_unreachable_authority_does_not_poison_the_others(issuer):
    verifier = OidcVerifier(["http://127.0.0.1:9", issuer.url], AUDIENCE, timeout=2)
    assert verifier.verify(issuer.token()).subject == "caller-sub-1"


def test_the_refusal_never_contains_the_token(issuer):
    token = issuer.token(audience="someone-else")
    with pytest.raises(InvalidToken) as refused:
        OidcVerifier([issuer.url], AUDIENCE).verify(token)
    assert token not in str(refused.value)
    assert token.split(".")[2] not in repr(refused.value)


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc.def.ghi", "abc.def.ghi"), ("  bearer   abc  ", "abc"), ("BEARER x", "x")],
)
def test_the_bearer_header_is_parsed(header, token):
    assert bearer_token(header) == token


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic abc", "Bearer a b", "Token abc"])
def test_a_malformed_authorization_header_is_refused(header):
    with pytest.raises(InvalidToken, match="Authorization header is invalid"):
        bearer_token(header)


def test_jwt_library_still_refuses_none_on_its_own():
    """Belt and braces: even if our algorithm check were bypassed, PyJWT refuses alg none with a key."""
    with pytest.raises(jwt.PyJWTError):
        jwt.decode(jwt.encode({"a": 1}, None, algorithm="none"), "k", algorithms=["RS256"])
