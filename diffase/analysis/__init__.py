"""Metrics on crystals: structure matching, validity, S.U.N., stability against a hull."""
