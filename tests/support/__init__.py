"""What the tests and the benchmarks share: real PostgreSQL and Redis servers on loopback.

Product code never imports it (an import-linter contract in pyproject.toml)."""
