"""Certification runs: a resumable SQLite run store, the per-input jobs, progress, and audits."""
