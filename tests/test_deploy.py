"""Production settings pass Django's deployment checks (docker-compose runs with these variables)."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def _check_deploy(**overrides: str) -> subprocess.CompletedProcess:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")},
        "CRM_ENV": "production",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
        "DJANGO_ALLOWED_HOSTS": "crm.example.com",
        "DJANGO_EMAIL_HOST": "smtp.example.com",
        **overrides,
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_check_deploy_clean_with_production_settings():
    result = _check_deploy()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def _env_example() -> dict[str, str]:
    """The variables of .env.example, read as docker compose's env_file reads them."""
    values = {}
    for line in (BASE_DIR / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _sep, value = line.partition("=")
            values[key.strip()] = value
    return values


def test_check_deploy_clean_with_the_production_example():
    """.env.example is the production example: as it stands, deployment checks pass (no mail.E001)."""
    example = _env_example()
    assert example["CRM_ENV"] == "production" and example["DJANGO_EMAIL_HOST"]
    result = _check_deploy(
        **{k: v for k, v in example.items() if k.startswith(("DJANGO_", "CRM_", "SURVEYS_"))}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_flags_debug_in_production():
    result = _check_deploy(DJANGO_DEBUG="true", DJANGO_SECURE="true")
    assert result.returncode != 0
    assert "DEBUG" in result.stdout + result.stderr


def test_production_refuses_to_start_without_secret_key():
    result = _check_deploy(DJANGO_SECRET_KEY="")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr
