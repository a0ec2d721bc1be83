"""Customer health (KPIS.md §10.10): a 0–100 score per active customer from visible, weighted components,
its bands, and the backtest that says whether the score beats the base rate of churn.

``components`` names the components and their rules, ``scoring`` scores customers as of any days from the
history (one SQL statement for all of them), ``backtest`` turns the scores of past month starts and the churn
that followed into churn per band, lift, precision, recall and AUC, ``services`` stores today's scores and the
backtest (the daily task), ``selectors`` reads them for the pages.
"""
