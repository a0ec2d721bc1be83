"""Marketing campaigns and attribution (KPIS.md §10.11): a campaign's cost and run, which campaign a customer
came from (first touch) and which last touched it before a deal (last touch, from the touch log)."""
