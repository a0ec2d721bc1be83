"""The API's sign-in: a personal token in ``Authorization: Bearer …`` acts as its user, within its scope.

A read-only token may only read (GET, HEAD, OPTIONS). The users endpoint (read) lives here too.
"""

from django.http import HttpRequest
from django.utils import translation
from ninja import Router, Schema
from ninja.errors import HttpError
from ninja.security import HttpBearer

from accounts import selectors
from accounts.models import ApiToken, User
from accounts.services.api_tokens import api_token_authenticate

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class ReadOnlyToken(HttpError):
    def __init__(self) -> None:
        super().__init__(403, "This token may only read; create a read-and-write token to change data.")


class TokenAuth(HttpBearer):
    openapi_description = (
        "A personal API token (Settings → API tokens), sent as `Authorization: Bearer mcrm_…`."
    )

    def authenticate(self, request: HttpRequest, token: str) -> ApiToken | None:
        api_token = api_token_authenticate(secret=token, request=request)
        if api_token is None:
            return None
        if request.method not in SAFE_METHODS and api_token.scope != ApiToken.Scope.WRITE:
            raise ReadOnlyToken
        request.user = api_token.user
        # Messages (422 field errors) in the token user's language, unless the request asks for one.
        if "Accept-Language" not in request.headers:
            translation.activate(api_token.user.language)
        return api_token


router = Router(tags=["users"])


class UserOut(Schema):
    id: int
    username: str
    first_name: str
    last_name: str
    role: str
    team_id: int | None
    is_active: bool
    is_service_account: bool


@router.get("/", response=list[UserOut], summary="Staff (read)")
def user_list(request: HttpRequest) -> list[User]:
    """Every member of staff, active first, then by name (the people a record can be assigned to)."""
    return list(selectors.staff_directory())
