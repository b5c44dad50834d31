"""Overseer: autonomous Claude agents as Kubernetes custom resources."""
