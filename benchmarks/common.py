"""Timing helpers for the benchmarks (shared with `certify bench`): medians of interleaved runs,
ratios in the same process."""

from certify.bench import interleaved_medians, table

__all__ = ["interleaved_medians", "table"]
