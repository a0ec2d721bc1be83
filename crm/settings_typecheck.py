"""The settings mypy's django-stubs plugin loads (pyproject.toml, ``[tool.django-stubs]``).

The plugin imports the settings and fills the app registry to learn the models; it never connects to a
database. ``crm.settings`` refuses to load without a DATABASE_URL, so a placeholder stands in when none
is set: ``make typecheck`` (and its pre-commit hook) runs without PostgreSQL, embedded or not.
"""

import os

os.environ.setdefault("DATABASE_URL", "postgres://typecheck@127.0.0.1:5432/typecheck")

from crm.settings import *  # noqa: F403
