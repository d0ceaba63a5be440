"""Lints and renders charts/vt with Helm 4's library (helm-python-sdk), then installs and
uninstalls it on a vt API server. Prints one JSON document with what it saw; exits non-zero
on failure. Usage: python3 chart_vt.py CHART_DIR [KUBECONFIG NAMESPACE]"""
import json
import sys

import helm_python as helm

chart_dir = sys.argv[1]
out = {}

lint = helm.lint(chart_dir, strict=True)
out["lint_errors"] = lint.get("errors", [])
out["lint_messages"] = [m for m in lint.get("messages", []) if m.get("severity", 0) >= 2]

cases = {
    "default": {},
    "nodeport": {"service": {"type": "NodePort", "nodePort": 30443}, "persistence": {"enabled": False}},
    "loadbalancer": {"service": {"type": "LoadBalancer"}, "advertise": "vt.example.com:443", "metrics": {"serviceMonitor": True, "grafanaDashboard": True}},
}
rendered = {}
chart = helm.Chart.load(chart_dir)
for name, values in cases.items():
    cfg = helm.Config(namespace="vt-system")
    manifests = cfg.render(chart, values, name="vt", namespace="vt-system", is_install=True)
    docs = []
    for path, text in manifests.items():
        for doc in text.split("\n---"):
            if "kind:" in doc:
                docs.append({"path": path, "text": doc})
    rendered[name] = docs
out["rendered"] = {k: [d["text"] for d in v] for k, v in rendered.items()}

if len(sys.argv) > 3:
    kubeconfig, namespace = sys.argv[2], sys.argv[3]
    cfg = helm.Config(kubeconfig_path=kubeconfig, namespace=namespace)
    rel = cfg.install(chart_dir, "vt", {"persistence": {"enabled": True}}, namespace=namespace)
    out["install"] = [rel["revision"], rel["status"]]
    cfg.uninstall("vt")
    out["uninstalled"] = True

print(json.dumps(out))
