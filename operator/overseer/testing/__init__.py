"""Stand-ins for tests and demos, shipped with the package as SDKs ship their fakes.

`scripted_model`: a local server speaking the Anthropic Messages API from a scenario file
(`overseer-scripted-model`), so the real SDK and the real agent loop run without a model API.
No deployable imports this package (an import-linter contract in pyproject.toml).
"""
