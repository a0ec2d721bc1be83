"""Forecast calibration (KPIS.md §10.6): forecasts frozen when their period begins, their items (each
deal with the probability and category it carried), and the stored stage calibration and Brier scores."""
