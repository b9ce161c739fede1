"""Vanilla FL versus BlockFL (without and with model verification) under malfunction."""
