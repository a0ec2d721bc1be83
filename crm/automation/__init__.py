"""Automation rules: "when … if … then …", defined by managers, run by Celery after the commit.

``rules`` is the catalogue (triggers, condition fields, actions) and checks a definition; ``events``
records that something happened (``automation_emit``: a run row per matching rule, in the caller's
transaction); ``engine`` runs a run once; ``services`` creates, changes, switches and dry-runs rules.
"""
