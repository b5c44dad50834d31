"""Overseer: autonomous Claude agents as Kubernetes custom resources."""


def __getattr__(name: str) -> str:
    # pyproject.toml is the only place the version is written; images and the chart's appVersion
    # follow it, and so does the operator's default agent image. Read when first asked for:
    # importlib.metadata's search of the installed distributions cost every goal pod's start CPU.
    if name == "__version__":
        from importlib.metadata import version

        return version("overseer")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
