"""The REST API at ``/api/v1/`` (django-ninja): every request acts as the user of its personal token and
goes through the same selectors (access rules) and services (validation, history, usage events with
``via=api``) as the pages. ``site`` assembles it; one module per resource."""
