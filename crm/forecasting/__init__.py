"""Stage probabilities over time: every change of a stage's probability is a version, so a forecast made
in the past is read with the probability the stage had then (KPIS.md §10.6)."""
