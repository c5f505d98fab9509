"""Scoring dispatch strategies: scenarios, baselines, receding-horizon replay, perfect foresight."""
