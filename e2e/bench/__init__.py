"""Benchmarks of the operator on the local control plane (`make bench`); see docs/performance.md."""
