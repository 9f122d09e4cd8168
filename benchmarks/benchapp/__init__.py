"""A tiny Django app for the benchmarks: two identical models, one registered."""
