"""Alerts (KPIS.md §10.8): a KPI off its target pace, or out of its control limits, for one period and scope.

``rules`` decides what triggers an alert (the pace of a running period to its target, KPIS.md §10.3; the XmR
control chart of the last twelve complete periods, §10.2) from snapshot rows only; ``services`` evaluates
them after every snapshot run and stores one ``Alert`` per KPI, scope and period (re-evaluation updates
it), records who was told (``AlertNotice``) and dismisses; ``selectors`` reads what a user may see;
``pages`` turns alerts into what the list, the dashboard's panel and the weekly report show (the
contribution sentence of §10.4 and the link to the records); ``views`` and ``forms`` serve the list.
"""
