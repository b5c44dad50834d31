"""The Overseer operator: reconciles Agents, Capabilities and Goals with kopf."""
