"""Overseer: autonomous Claude agents as Kubernetes custom resources."""

from importlib.metadata import version

# pyproject.toml is the only place the version is written; images and the chart's appVersion
# follow it, and so does the operator's default agent image.
__version__ = version("overseer")
