"""Facades of the systems calltape unites: one thin module per seed system (names only)."""
