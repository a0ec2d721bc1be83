import pytest

from accounts.models import ApiToken
from accounts.services.api_tokens import api_token_create


def token_for(user, scope: str = ApiToken.Scope.WRITE) -> str:
    return api_token_create(actor=user, user=user, name="test", scope=scope).secret


class Api:
    """A Django test client speaking JSON with a token."""

    def __init__(self, client, token: str) -> None:
        self.client, self.headers = client, {"Authorization": f"Bearer {token}"}

    def get(self, path: str, **params):
        return self.client.get(f"/api/v1{path}", params, headers=self.headers)

    def send(self, method: str, path: str, body=None, headers=None):
        return getattr(self.client, method)(
            f"/api/v1{path}",
            body,
            content_type="application/json",
            headers={**self.headers, **(headers or {})},
        )

    def post(self, path: str, body=None, headers=None):
        return self.send("post", path, body, headers)

    def patch(self, path: str, body=None, headers=None):
        return self.send("patch", path, body, headers)


@pytest.fixture
def api(client):
    return lambda user, scope=ApiToken.Scope.WRITE: Api(client, token_for(user, scope))
