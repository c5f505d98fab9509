"""Solar PV forecasts from weather input with pvlib, nowcast correction, bands and scores."""
