"""What analysts take away: CSV/Parquet exports and PNG plots of any store, live or simulated."""
