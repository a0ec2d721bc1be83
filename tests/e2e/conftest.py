"""Browser tests: Playwright drives Debian's Chromium against Django's live server on 127.0.0.1."""

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import seed_defaults

# Debian's Chromium (or the one CRM_CHROMIUM names); without it, Playwright's own (.ci/browser installs one).
CHROMIUM = os.environ.get("CRM_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Playwright's sync API runs an event loop in this thread; the Django ORM calls made by the test itself
# (creating users, checking rows) are still plain synchronous code.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

LAPTOP = {"width": 1366, "height": 860}
PHONE = {"width": 390, "height": 844}


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        executable = CHROMIUM if shutil.which(CHROMIUM) else None
        if executable is None and not Path(playwright.chromium.executable_path).exists():
            pytest.fail(
                f"No Chromium at {CHROMIUM} and no Playwright Chromium: run `bash .ci/browser`, or "
                "`python -m playwright install chromium`, or `apt-get install chromium`, or set CRM_CHROMIUM"
            )
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture(autouse=True)
def default_pipeline(transactional_db):
    """Browser tests run in real transactions, which empty the tables between tests: re-seed the defaults."""
    seed_defaults()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport=LAPTOP, base_url=live_server.url, locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield page
    context.close()
    assert not errors, f"browser errors: {errors}"


@pytest.fixture
def shot():
    """Save a screenshot under test-artifacts/ (laptop and phone widths) for a person to look at."""
    ARTIFACTS.mkdir(exist_ok=True)

    def take(page, name: str, *, phone: bool = True) -> None:
        page.set_viewport_size(LAPTOP)
        page.screenshot(path=ARTIFACTS / f"{name}-laptop.png", full_page=True)
        if phone:
            page.set_viewport_size(PHONE)
            page.screenshot(path=ARTIFACTS / f"{name}-phone.png", full_page=True)
            page.set_viewport_size(LAPTOP)

    return take


def sign_in(page, username: str, password: str = "correct horse battery") -> None:  # noqa: S107
    page.goto("/accounts/login/")
    page.locator("input[name=username]").fill(username)
    page.locator("input[name=password]").fill(password)
    page.locator("form button[type=submit]").click()
    page.wait_for_url("**/crm/")


def drag(page, source, target) -> None:
    """Drag with real mouse steps (Locator.drag_to does not start a native drag after an htmx swap)."""
    src, dst = source.bounding_box(), target.bounding_box()
    page.mouse.move(src["x"] + 5, src["y"] + 5)
    page.mouse.down()
    page.mouse.move(dst["x"] + dst["width"] / 2, dst["y"] + dst["height"] / 2, steps=12)
    page.mouse.up()
