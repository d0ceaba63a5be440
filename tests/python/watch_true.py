"""The official Kubernetes Python client against a vt tenant: its watches send `watch=True`
(Python's bool spelled by the client), which kube-apiserver parses as true. Prints one JSON line
with what it saw; exits non-zero on failure.

usage: watch_true.py KUBECONFIG
"""
import json
import sys
import threading
import time

from kubernetes import client, config, watch


def main():
    config.load_kube_config(config_file=sys.argv[1])
    v1 = client.CoreV1Api()
    seen = []

    def create_later():
        time.sleep(1.0)
        body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="from-python"), data={"a": "1"})
        v1.create_namespaced_config_map("default", body)

    creator = threading.Thread(target=create_later, daemon=True)
    creator.start()
    w = watch.Watch()
    for event in w.stream(v1.list_namespaced_config_map, "default", timeout_seconds=10):
        seen.append([event["type"], event["object"].metadata.name])
        if event["object"].metadata.name == "from-python" and event["type"] == "ADDED":
            w.stop()
    # The watch can see the ConfigMap before its create returns: let the create finish, so the
    # interpreter never exits under a thread in the middle of a request.
    creator.join(timeout=10)
    print(json.dumps({"events": seen}))
    if ["ADDED", "from-python"] not in seen:
        sys.exit(1)


if __name__ == "__main__":
    main()
