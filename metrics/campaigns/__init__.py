"""The campaigns report: first-touch and last-touch figures per campaign, side by side (KPIS.md §10.11)."""
