"""In a browser: a user makes an API token (shown once), uses it, and opens the API docs, which load from
our own static files under the site's CSP (any CSP violation is a console error, and fails the test)."""

import pytest
from django.test import Client
from playwright.sync_api import expect

from tests.e2e.conftest import sign_in
from tests.factories import make_customer, make_user

pytestmark = pytest.mark.django_db(transaction=True)


def test_make_a_token_use_it_and_read_the_docs(page, shot):
    rep = make_user(username="tilda")
    make_customer(rep, name="Token Kunde GmbH")
    sign_in(page, "tilda")
    page.get_by_role("link", name="API tokens").click()
    page.get_by_label("Name").fill("Shop sync")
    page.get_by_label("Access").select_option("read")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator(".token-secret").inner_text().strip()
    assert secret.startswith("mcrm_")
    shot(page, "api-tokens", phone=False)
    answer = Client().get("/api/v1/customers/", headers={"Authorization": f"Bearer {secret}"})
    assert [row["name"] for row in answer.json()["results"]] == ["Token Kunde GmbH"]
    page.reload()
    expect(page.locator(".token-secret")).to_have_count(0)
    page.goto("/api/v1/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Mini CRM API")
    expect(page.locator(".opblock-tag-section").first).to_be_visible()
    shot(page, "api-docs", phone=False)
