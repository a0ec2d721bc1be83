"""Link tokens: 256-bit random, stored only as a hash; random and tampered tokens are never accepted."""

import hashlib
import random
import secrets
import string

import pytest
from django.db import connection
from django.urls import reverse

from surveys import selectors, services
from surveys.models import SurveyInvitation, SurveyResponse
from tests.factories import make_customer, make_invitation, make_survey

pytestmark = pytest.mark.django_db

ALPHABET = string.ascii_letters + string.digits + "-_"


def recording(statements: list[str]):
    """An execute wrapper that records every SQL statement sent to the database."""

    def wrapper(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    return wrapper


def tampered(token: str, rng: random.Random) -> str:
    """A near miss of a real token: one character flipped, truncated, extended, or case-swapped."""
    kind = rng.randrange(5)
    i = rng.randrange(len(token))
    if kind == 0:
        return token[:i] + rng.choice(ALPHABET.replace(token[i], "")) + token[i + 1 :]
    if kind == 1:
        return token[: rng.randrange(1, len(token))]
    if kind == 2:
        return token + "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(1, 5)))
    if kind == 3:
        return token.swapcase() if token.swapcase() != token else token + "A"
    return token[:i] + token[i + 1 :]


@pytest.fixture
def real_tokens():
    survey = make_survey("nps")
    customer = make_customer()
    return [make_invitation(survey, customer).token for _ in range(20)]


def test_issued_tokens_are_256_bit_urlsafe_and_only_their_hash_is_stored(real_tokens):
    for token in real_tokens:
        assert len(token) == 43 and set(token) <= set(ALPHABET)
    stored = list(SurveyInvitation.objects.values_list("token_hash", flat=True))
    assert sorted(stored) == sorted(hashlib.sha256(t.encode()).hexdigest() for t in real_tokens)
    assert not any(t in stored for t in real_tokens)


def test_10000_random_and_tampered_tokens_are_accepted_zero_times_and_write_nothing(real_tokens):
    rng = random.Random(20260615)
    real = set(real_tokens)
    candidates = [secrets.token_urlsafe(32) for _ in range(5_000)]
    candidates += [tampered(rng.choice(real_tokens), rng) for _ in range(5_000)]
    candidates = [c for c in candidates if c not in real]
    assert len(candidates) >= 9_990
    statements: list[str] = []
    with connection.execute_wrapper(recording(statements)):
        accepted = [c for c in candidates if selectors.invitation_by_token(token=c) is not None]
    assert accepted == []
    assert 0 < len(statements) <= len(candidates)
    assert all(sql.lstrip().upper().startswith("SELECT") for sql in statements)
    # Every real token still works.
    assert all(selectors.invitation_by_token(token=t) is not None for t in real_tokens)


def test_tampered_tokens_over_http_are_404_with_the_privacy_headers_and_no_writes(client, real_tokens):
    rng = random.Random(7)
    candidates = [tampered(rng.choice(real_tokens), rng) for _ in range(150)]
    candidates += [secrets.token_urlsafe(32) for _ in range(50)]
    candidates += ["", "a", "%00", "../../etc/passwd", "<script>", "x" * 500, "ü" * 43]
    statements: list[str] = []
    with connection.execute_wrapper(recording(statements)):
        for candidate in candidates:
            if candidate in real_tokens:
                continue
            path = reverse("surveys_public:answer", args=["placeholder"]).replace("placeholder", candidate)
            for method in ("get", "post"):
                response = getattr(client, method)(
                    path, {"step": "score", "score": "9"} if method == "post" else None
                )
                assert response.status_code == 404, (candidate, response.status_code)
                if response.get("X-Robots-Tag"):
                    assert response["Referrer-Policy"] == "no-referrer"
    written = [
        sql for sql in statements if not sql.lstrip().upper().startswith(("SELECT", "SAVEPOINT", "RELEASE"))
    ]
    assert written == []
    assert not SurveyResponse.objects.exists()
    assert SurveyInvitation.objects.filter(opened_at__isnull=False).count() == 0


def test_a_well_formed_unknown_token_gets_the_friendly_404_page(client):
    response = client.get(reverse("surveys_public:answer", args=[secrets.token_urlsafe(32)]))
    assert response.status_code == 404
    assert "This link does not work" in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    assert response["Referrer-Policy"] == "no-referrer"


def test_a_suppressed_invitation_has_no_link_at_all(default_surveys):
    invitation = SurveyInvitation.objects.create(
        survey=make_survey("csat"),
        customer=make_customer(email=""),
        trigger="manual",
        created_at=make_customer().created_at,
        scheduled_for=make_customer().created_at,
    )
    services.invitation_send(invitation_id=invitation.pk)
    invitation.refresh_from_db()
    assert invitation.status == "suppressed" and invitation.token_hash is None
