"""Helm 4 (its Go library, through helm-python-sdk) against a vt API server: install,
upgrade, rollback and uninstall of tests/helm/chart. Prints one line per step; exits non-zero
on any failure. Usage: python3 lifecycle.py KUBECONFIG CHART_DIR NAMESPACE"""
import json
import sys

import helm_python as helm

kubeconfig, chart, namespace = sys.argv[1:4]
cfg = helm.Config(kubeconfig_path=kubeconfig, namespace=namespace)
r = cfg.install(chart, "demo", {"message": "v1"}, namespace=namespace)
print("install", r["revision"], r["status"])
r = cfg.upgrade(chart, "demo", {"message": "v2", "replicas": 3, "image": "nginx:1.28"}, namespace=namespace)
print("upgrade", r["revision"], r["status"])
cfg.rollback("demo", version=1)
history = cfg.history("demo")
print("history", json.dumps([[h["revision"], h["status"]] for h in history]))
r = cfg.uninstall("demo")
print("uninstall", json.dumps(r.get("info", "")))
