"""Cohorts and revenue retention (KPIS.md §10.9): the page, its filters and the task's service. The KPIs
themselves are in the registry (``metrics.kpis.revenue_retention``)."""
