"""`make images`: both images from one pinned base, named and tagged from one place (the
package version), built with whichever container engine is there, or a clear message."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

from overseer.operator.settings import Settings

REPO = Path(__file__).resolve().parent.parent
DOCKERFILES = [REPO / "operator" / "Dockerfile", REPO / "agent_image" / "Dockerfile"]
PINNED = re.compile(r"^ARG PYTHON_IMAGE=python:(\d+\.\d+\.\d+)-slim-\w+@sha256:[0-9a-f]{64}$", re.M)


def package_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def make_images(path: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-C", str(REPO), "--no-print-directory", "images", *args],
                          env={"PATH": path, "HOME": "/tmp"}, capture_output=True, text=True, timeout=60)


def fake_engine(folder: Path, name: str, info_exit: int = 0) -> Path:
    """A container engine that records how it was called instead of building."""
    calls = folder / f"{name}.calls"
    engine = folder / name
    engine.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n[ "$1" = info ] && exit {info_exit}\nexit 0\n')
    engine.chmod(0o755)
    return calls


def test_both_images_use_the_same_base_pinned_by_version_and_digest():
    pins = {path.name: PINNED.findall(path.read_text()) for path in DOCKERFILES}
    lines = {re.search(r"^ARG PYTHON_IMAGE=.*$", p.read_text(), re.M).group(0) for p in DOCKERFILES}

    assert all(len(found) == 1 for found in pins.values()), pins
    assert len(lines) == 1, f"the two Dockerfiles pin different bases: {lines}"


def test_the_final_stage_holds_the_install_and_no_build_tools():
    for path in DOCKERFILES:
        text = path.read_text()
        build, final = text.split("\nFROM ${PYTHON_IMAGE}\n")
        assert "RUN ./operator/install-wheel.sh /opt/overseer" in build, path
        assert "COPY --from=build /opt/overseer /opt/overseer" in final
        assert "pip uninstall -y -q pip setuptools wheel" in final
        assert not re.search(r"pip install|build-essential|gcc|install-wheel", final), path
        assert re.search(r"^USER 65532:65532$", final, re.M), f"{path}: not a numeric non-root user"


def test_entrypoints_are_the_two_commands():
    assert 'ENTRYPOINT ["overseer-operator"]' in DOCKERFILES[0].read_text()
    assert 'ENTRYPOINT ["overseer-agent"]' in DOCKERFILES[1].read_text()


def test_without_a_container_engine_make_images_says_so(path_without):
    result = make_images(path_without("docker", "podman", "buildah"))

    assert result.returncode != 0
    assert "no container engine found (looked for docker podman buildah on PATH)" in result.stderr


def test_an_engine_that_does_not_answer_is_named(path_without):
    path = path_without("docker", "podman", "buildah")
    fake_engine(Path(path), "docker", info_exit=1)

    result = make_images(path)

    assert result.returncode != 0
    assert "docker is installed but does not work" in result.stderr


def test_images_are_tagged_with_the_package_version_the_operator_asks_for(path_without, clean_env):
    path = path_without("docker", "podman", "buildah")
    calls = fake_engine(Path(path), "podman")

    result = make_images(path)

    assert result.returncode == 0, result.stderr
    builds = [line for line in calls.read_text().splitlines() if line.startswith("build ")]
    version = package_version()
    assert builds == [
        f"build --build-arg VERSION={version} -f operator/Dockerfile -t overseer/operator:{version} .",
        f"build --build-arg VERSION={version} -f agent_image/Dockerfile -t overseer/agent:{version} .",
    ]
    assert Settings().agent_image == f"overseer/agent:{version}"


def test_registry_and_tag_can_be_chosen(path_without):
    path = path_without("docker", "podman", "buildah")
    calls = fake_engine(Path(path), "buildah")

    assert make_images(path, "IMAGE_REGISTRY=ghcr.io/acme/", "IMAGE_TAG=dev").returncode == 0

    tags = re.findall(r"-t (\S+)", calls.read_text())
    assert tags == ["ghcr.io/acme/overseer/operator:dev", "ghcr.io/acme/overseer/agent:dev"]
