"""manifests/ (kustomize) installs what the chart installs: the base is the chart's default
rendering and each overlay the chart with the matching values, object by object; all three
apply to the real API server (dry run first, then for real)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from e2e import harness
from e2e.chart import (MANIFESTS, NAMESPACE, OVERLAY_VALUES, OVERLAY_WATCH_NAMESPACE, delete_kustomize_install,
                       exists, helm_path, key, kustomize, normalized, objects, template)

LAYOUTS = {"base": [], "overlays/ha": OVERLAY_VALUES["ha"], "overlays/namespaced": OVERLAY_VALUES["namespaced"]}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_kustomize_layout_is_the_chart_object_by_object(layout: str) -> None:
    if not helm_path().exists():
        pytest.fail(f"{helm_path()} missing: run make helm-build", pytrace=False)
    built = {key(o): normalized(o) for o in kustomize(layout) if o["kind"] != "Namespace"}
    chart = {key(o): normalized(o) for o in objects(template(*LAYOUTS[layout]))}
    assert sorted(built) == sorted(chart), f"manifests/{layout} and the chart differ in objects: run make manifests"
    for k in chart:
        assert built[k] == chart[k], f"{k} differs between manifests/{layout} and the chart: run make manifests"


def test_kubectl_apply_k_base_and_overlays(kubectl: harness.Kubectl, tmp_path: Path) -> None:
    # A server-side dry run cannot put objects into a namespace it only pretends to create.
    for namespace_file in ("base/namespace.yaml", "overlays/namespaced/namespace.yaml"):
        kubectl("apply", "-f", str(MANIFESTS / namespace_file))
    for layout in LAYOUTS:
        out = kubectl("apply", "-k", str(MANIFESTS / layout), "--dry-run=server")
        assert "(server dry run)" in out.stdout, out.stdout

    def deployment() -> dict[str, Any]:
        return json.loads(kubectl("get", "deployment", "overseer-operator", "-n", NAMESPACE, "-o", "json").stdout)

    try:
        kubectl("apply", "-k", str(MANIFESTS / "base"))
        missing = [key(o) for o in kustomize("base") if not exists(kubectl, o)]
        assert not missing, missing
        dep = deployment()
        assert dep["spec"]["replicas"] == 2
        harness.wait_for(lambda: deployment()["status"].get("readyReplicas") == 2, timeout=60,
                         description="two operator pods admitted (Pod Security restricted) and ready")

        kubectl("apply", "-k", str(MANIFESTS / "overlays" / "ha"))
        assert deployment()["spec"]["replicas"] == 3
        pdb = json.loads(kubectl("get", "pdb", "overseer-operator", "-n", NAMESPACE, "-o", "json").stdout)
        assert pdb["spec"]["minAvailable"] == 2

        # Namespaced mode from scratch: nothing cluster-wide for the operator, a Role in team-a.
        delete_kustomize_install(kubectl, "overlays/ha")
        kubectl("apply", "-k", str(MANIFESTS / "overlays" / "namespaced"))
        args = deployment()["spec"]["template"]["spec"]["containers"][0]["args"]
        assert f"--namespace={OVERLAY_WATCH_NAMESPACE}" in args and "--all-namespaces" not in args
        assert kubectl("get", "clusterrole", "overseer-operator", "--ignore-not-found", "-o", "name").stdout == ""
        assert kubectl("get", "role", "overseer-operator", "-n", OVERLAY_WATCH_NAMESPACE, "-o", "name").stdout
        can = kubectl("auth", "can-i", "get", "secrets", "-n", "default",
                      f"--as=system:serviceaccount:{NAMESPACE}:overseer-operator", check=False).stdout.strip()
        assert can == "no"
    finally:
        delete_kustomize_install(kubectl, "overlays/namespaced")
        kubectl("delete", "namespace", OVERLAY_WATCH_NAMESPACE, "--ignore-not-found", "--wait=false")
