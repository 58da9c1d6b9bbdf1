"""Deprecated alias of :mod:`explainzoo.explainers.mechanics` (kept while
``benchmarks/rivals.py`` imports ``fill_value`` from here); import from
``explainzoo.explainers.mechanics`` instead."""

from .mechanics import chunks, fill_value, generator, minmax_per_map  # noqa: F401
