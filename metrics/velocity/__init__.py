"""Pipeline velocity and time in stage on their KPI pages, and the download of the stays behind a stage
(KPIS.md §10.7); the KPIs themselves are in ``metrics.kpis.velocity``."""
