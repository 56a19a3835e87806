"""Benchmarks for mailgate; see bench/BENCHMARKS.md. Not part of the installed package."""
