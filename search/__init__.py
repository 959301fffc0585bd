"""Strategies, trial runner and journal. Never imports Paddle."""
