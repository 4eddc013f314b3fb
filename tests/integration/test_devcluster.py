"""The dev cluster behaves like Kubernetes where our operator depends on it.

Jobs run to completion on GPU nodes with their termination message in Pod
status; the scheduler refuses Pods that ask for more GPUs than any node has;
deleting a Pod delivers SIGTERM; env, volumes and the Pod's own credentials
work the way they do on a real kubelet.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import textwrap
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from devcluster import controlplane, nodeagent
from tests.helpers import WORKSPACE_CLAIM, condition, restricted, wait_for

pytestmark = pytest.mark.cluster


def apply(cluster, manifest: str, namespace: str):
    """`kubectl apply` of hand-written Pods and Jobs with the securityContext Pod Security
    "restricted" asks for (test namespaces enforce it); what they test is the node agent."""
    return cluster.apply(restricted(manifest), namespace)


def pod_of_job(cluster, namespace, job):
    pods = cluster.list("pods", namespace, selector=f"job-name={job}")
    return pods[0] if pods else None


def test_nodes_are_ready_with_gpus(cluster):
    nodes = cluster.list("nodes")
    assert len(nodes) >= 1
    for node in nodes:
        assert condition(node, "Ready")["status"] == "True"
        assert int(node["status"]["allocatable"]["nvidia.com/gpu"]) > 0
        assert node["metadata"]["labels"]["kubernetes.io/os"] == "linux"
        assert not any(t["key"] == "node.kubernetes.io/not-ready" for t in node["spec"].get("taints") or [])


def test_api_server_enforces_rbac(cluster, namespace):
    # A ServiceAccount without bindings may not list Pods: authorization is really on.
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    result = cluster.kubectl(
        "auth", "can-i", "list", "pods", "-n", namespace, f"--as=system:serviceaccount:{namespace}:nobody", check=False
    )
    assert result.stdout.strip() == "no"


def test_gpu_job_runs_to_succeeded_with_termination_message(cluster, namespace):
    apply(cluster, 
        textwrap.dedent(
            """
            apiVersion: v1
            kind: Secret
            metadata: {name: creds}
            stringData: {token: s3cr3t}
            ---
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: settings}
            data: {mode: fast, "config.yaml": "lr: 0.1\\n"}
            ---
            apiVersion: batch/v1
            kind: Job
            metadata: {name: hello-gpu}
            spec:
              backoffLimit: 0
              template:
                metadata: {labels: {team: ml}}
                spec:
                  restartPolicy: Never
                  containers:
                  - name: main
                    image: busybox:1.36
                    command: ["sh", "-c"]
                    args:
                    - |
                      set -e
                      test "$TOKEN" = s3cr3t
                      test "$MODE" = fast
                      test "$(cat /etc/settings/config.yaml)" = "lr: 0.1"
                      test "$(cat /etc/creds/token)" = s3cr3t
                      echo "$POD_NAME $POD_NS $TEAM $MEM_MI" > /scratch/who
                      printf '{"result":"%s","ip":"%s"}' "$(cat /scratch/who)" "$MY_IP" > /dev/termination-log
                    env:
                    - {name: TOKEN, valueFrom: {secretKeyRef: {name: creds, key: token}}}
                    - {name: MODE, valueFrom: {configMapKeyRef: {name: settings, key: mode}}}
                    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
                    - {name: POD_NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
                    - {name: TEAM, valueFrom: {fieldRef: {fieldPath: "metadata.labels['team']"}}}
                    - {name: MY_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
                    - {name: MEM_MI, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
                    resources:
                      limits: {nvidia.com/gpu: 2, memory: 512Mi}
                    volumeMounts:
                    - {name: settings, mountPath: /etc/settings}
                    - {name: creds, mountPath: /etc/creds, readOnly: true}
                    - {name: scratch, mountPath: /scratch}
                  volumes:
                  - {name: settings, configMap: {name: settings}}
                  - {name: creds, secret: {secretName: creds}}
                  - {name: scratch, emptyDir: {}}
            """
        ),
        namespace,
    )
    job = wait_for(
        lambda: (j := cluster.get("job", "hello-gpu", namespace)) and condition(j, "Complete") and j,
        90,
        "Job hello-gpu to complete",
    )
    assert job["status"]["succeeded"] == 1
    pod = pod_of_job(cluster, namespace, "hello-gpu")
    assert pod["status"]["phase"] == "Succeeded"
    node = cluster.get("node", pod["spec"]["nodeName"])
    assert int(node["status"]["allocatable"]["nvidia.com/gpu"]) >= 2
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    message = json.loads(terminated["message"])
    assert message["result"] == f"{pod['metadata']['name']} {namespace} ml 512"
    assert message["ip"] == pod["status"]["podIP"] and message["ip"].startswith("127.")


def test_failed_container_reports_exit_code_and_message(cluster, namespace):
    apply(cluster, 
        textwrap.dedent(
            """
            apiVersion: v1
            kind: Pod
            metadata: {name: failing}
            spec:
              restartPolicy: Never
              containers:
              - name: main
                image: busybox
                command: ["sh", "-c", "echo 'data error: train.jsonl:17' > /dev/termination-log; exit 3"]
            """
        ),
        namespace,
    )
    pod = wait_for(
        lambda: (p := cluster.get("pod", "failing", namespace))["status"].get("phase") == "Failed" and p,
        60,
        "pod failing to fail",
    )
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3
    assert terminated["reason"] == "Error"
    assert "train.jsonl:17" in terminated["message"]


def test_too_many_gpus_stays_pending_unschedulable(cluster, namespace):
    most = max(int(n["status"]["allocatable"]["nvidia.com/gpu"]) for n in cluster.list("nodes"))
    apply(cluster, 
        textwrap.dedent(
            f"""
            apiVersion: v1
            kind: Pod
            metadata: {{name: greedy}}
            spec:
              containers:
              - name: main
                image: busybox
                command: ["sleep", "600"]
                resources: {{limits: {{nvidia.com/gpu: {most + 1}}}}}
            """
        ),
        namespace,
    )
    scheduled = wait_for(
        lambda: condition(cluster.get("pod", "greedy", namespace), "PodScheduled"),
        60,
        "a PodScheduled condition on pod greedy",
    )
    assert scheduled["status"] == "False"
    assert scheduled["reason"] == "Unschedulable"
    assert "nvidia.com/gpu" in scheduled["message"]
    assert cluster.get("pod", "greedy", namespace)["status"]["phase"] == "Pending"


def test_deleting_a_running_pod_delivers_sigterm(cluster, namespace):
    apply(cluster, 
        textwrap.dedent(
            """
            apiVersion: v1
            kind: PersistentVolumeClaim
            metadata: {name: state}
            spec:
              accessModes: [ReadWriteOnce]
              resources: {requests: {storage: 1Gi}}
            ---
            apiVersion: v1
            kind: Pod
            metadata: {name: sleeper}
            spec:
              terminationGracePeriodSeconds: 20
              containers:
              - name: main
                image: busybox
                command: ["sh", "-c"]
                args:
                - |
                  trap 'echo "got SIGTERM" > /state/signal; exit 0' TERM
                  echo started > /state/started
                  while true; do sleep 0.1; done
                volumeMounts: [{name: state, mountPath: /state}]
              volumes:
              - {name: state, persistentVolumeClaim: {claimName: state}}
            """
        ),
        namespace,
    )
    wait_for(
        lambda: cluster.get("pod", "sleeper", namespace)["status"].get("phase") == "Running"
        and list(cluster.node_dir.parent.glob(f"pvcs/{namespace}/state/started")),
        60,
        "pod sleeper to run",
    )
    cluster.kubectl("delete", "pod", "sleeper", "-n", namespace, "--wait=true", "--timeout=60s")
    signal_file = cluster.node_dir.parent / "pvcs" / namespace / "state" / "signal"
    # The PVC directory outlives the Pod, as a volume would.
    assert signal_file.read_text().strip() == "got SIGTERM"


def test_sigkill_after_grace_period(cluster, namespace):
    apply(cluster, 
        textwrap.dedent(
            """
            apiVersion: v1
            kind: Pod
            metadata: {name: stubborn}
            spec:
              terminationGracePeriodSeconds: 1
              containers:
              - name: main
                image: busybox
                command: ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"]
            """
        ),
        namespace,
    )
    wait_for(lambda: cluster.get("pod", "stubborn", namespace)["status"].get("phase") == "Running", 60, "stubborn to run")
    result = cluster.kubectl("delete", "pod", "stubborn", "-n", namespace, "--wait=true", "--timeout=30s")
    assert "deleted" in result.stdout


def test_pod_reaches_the_api_server_with_its_own_service_account(cluster, namespace):
    apply(cluster, 
        textwrap.dedent(
            """
            apiVersion: v1
            kind: ServiceAccount
            metadata: {name: trainer}
            ---
            apiVersion: v1
            kind: Pod
            metadata: {name: whoami}
            spec:
              serviceAccountName: trainer
              restartPolicy: Never
              containers:
              - name: main
                image: busybox
                command: ["python", "-c"]
                args:
                - |
                  import json, os
                  from kubernetes import client
                  from finetune_operator.k8s.client import api_client
                  # The operator's own client: in-cluster credentials (the projected token at
                  # its usual path), as in any Pod; no KUBECONFIG.
                  assert "KUBECONFIG" not in os.environ
                  review = client.AuthenticationV1Api(api_client()).create_self_subject_review({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
                  open("/dev/termination-log", "w").write(json.dumps({"user": review.status.user_info.username, "host": os.environ["KUBERNETES_SERVICE_HOST"]}))
            """
        ),
        namespace,
    )
    pod = wait_for(
        lambda: (p := cluster.get("pod", "whoami", namespace))["status"].get("phase") in ("Succeeded", "Failed") and p,
        120,
        "pod whoami to finish",
    )
    assert pod["status"]["phase"] == "Succeeded", cluster.pod_log(namespace, "whoami", "main")
    message = json.loads(pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"])
    assert message == {"user": f"system:serviceaccount:{namespace}:trainer", "host": "127.0.0.1"}


def test_a_pod_sees_its_volumes_at_their_paths_and_nothing_of_other_pods(cluster, namespace):
    # Two Pods, each with a Secret volume and an emptyDir: each sees its own at the mountPath
    # its manifest names, a private /tmp, and no path of the other Pod, nor the node's directory.
    apply(cluster, 
        textwrap.dedent(
            """
            apiVersion: v1
            kind: Secret
            metadata: {name: first-secret}
            stringData: {key: first-value}
            ---
            apiVersion: v1
            kind: Pod
            metadata: {name: first}
            spec:
              containers:
              - name: main
                image: busybox
                command: ["sh", "-c", "echo mine > /scratch/file; echo private > /tmp/first-tmp; sleep 600"]
                volumeMounts:
                - {name: secret, mountPath: /etc/first-secret, readOnly: true}
                - {name: scratch, mountPath: /scratch}
              volumes:
              - {name: secret, secret: {secretName: first-secret}}
              - {name: scratch, emptyDir: {}}
            """
        ),
        namespace,
    )
    wait_for(
        lambda: list(cluster.node_dir.glob(f"pods/{namespace}_first_*/volumes/scratch/file")),
        60,
        "pod first to write its emptyDir",
    )
    first_dir = next(cluster.node_dir.glob(f"pods/{namespace}_first_*"))
    apply(cluster, 
        textwrap.dedent(
            f"""
            apiVersion: v1
            kind: Pod
            metadata: {{name: second}}
            spec:
              restartPolicy: Never
              containers:
              - name: main
                image: busybox
                command: ["sh", "-c"]
                args:
                - |
                  seen=""
                  for path in /etc/first-secret/key /scratch/file /tmp/first-tmp {first_dir}/volumes/secret/key \\
                      {cluster.node_dir.parent}/pki/ca.key; do
                    if [ -e "$path" ]; then seen="$seen $path"; fi
                  done
                  if touch /etc/own-config/x 2>/dev/null; then seen="$seen writable-read-only-mount"; fi
                  printf '%s|%s' "$seen" "$(cat /etc/own-config/k)" > /dev/termination-log
                volumeMounts:
                - {{name: data, mountPath: /data}}
                - {{name: own, mountPath: /etc/own-config, readOnly: true}}
              volumes:
              - {{name: data, emptyDir: {{}}}}
              - {{name: own, downwardAPI: {{items: [{{path: k, fieldRef: {{fieldPath: metadata.name}}}}]}}}}
            """
        ),
        namespace,
    )
    pod = wait_for(
        lambda: (p := cluster.get("pod", "second", namespace))["status"].get("phase") in ("Succeeded", "Failed") and p,
        60,
        "pod second to finish",
    )
    assert pod["status"]["phase"] == "Succeeded", cluster.pod_log(namespace, "second", "main")
    message = pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
    assert message == "|second", f"pod second saw: {message}"


def test_unknown_image_waits_with_err_image_pull(cluster, namespace):
    apply(cluster, 
        textwrap.dedent(
            """
            apiVersion: v1
            kind: Pod
            metadata: {name: noimage}
            spec:
              containers:
              - {name: main, image: "registry.example/nothing:1", command: ["true"]}
            """
        ),
        namespace,
    )
    waiting = wait_for(
        lambda: cluster.get("pod", "noimage", namespace)["status"]["containerStatuses"][0]["state"].get("waiting", {}).get("reason")
        == "ErrImagePull",
        60,
        "ErrImagePull on pod noimage",
    )
    assert waiting


def test_job_controller_garbage_collects_pods_of_a_deleted_job(cluster, namespace):
    apply(cluster, 
        textwrap.dedent(
            """
            apiVersion: batch/v1
            kind: Job
            metadata: {name: long}
            spec:
              template:
                spec:
                  restartPolicy: Never
                  terminationGracePeriodSeconds: 2
                  containers:
                  - {name: main, image: busybox, command: ["sleep", "600"]}
            """
        ),
        namespace,
    )
    wait_for(lambda: (p := pod_of_job(cluster, namespace, "long")) and p["status"].get("phase") == "Running", 60, "job long's pod to run")
    cluster.kubectl("delete", "job", "long", "-n", namespace, "--cascade=foreground", "--wait=true", "--timeout=60s")
    wait_for(lambda: not cluster.list("pods", namespace, selector="job-name=long"), 60, "job long's pods to be gone")


def test_pods_of_an_indexed_job_find_each_other_by_dns_name(cluster, namespace):
    # The node agent answers these names in env and args with Pod IPs, waiting for a peer
    # that has none yet (cluster DNS would find nothing until it has).
    # Each Pod waits on a shared directory (the namespace's claim) until both have started: a
    # finished Pod has no name.
    apply(cluster, 
        textwrap.dedent(
            f"""
            apiVersion: v1
            kind: Service
            metadata: {{name: peers}}
            spec: {{clusterIP: None, publishNotReadyAddresses: true, selector: {{app: peers}}, ports: [{{port: 9}}]}}
            ---
            apiVersion: batch/v1
            kind: Job
            metadata: {{name: peers}}
            spec:
              completions: 2
              parallelism: 2
              completionMode: Indexed
              backoffLimit: 0
              template:
                metadata: {{labels: {{app: peers}}}}
                spec:
                  subdomain: peers
                  restartPolicy: Never
                  containers:
                  - name: main
                    image: busybox
                    command: ["sh", "-c"]
                    args:
                    - |
                      touch /shared/$HOSTNAME
                      for _ in $(seq 300); do [ -e /shared/peers-0 ] && [ -e /shared/peers-1 ] && break; sleep 0.1; done
                      printf "%s %s %s %s" "$FIRST" peers-1.peers.{namespace}.svc "$HOSTNAME" "$ANY" > /dev/termination-log
                    volumeMounts: [{{name: shared, mountPath: /shared}}]
                    env:
                    - {{name: FIRST, value: "peers-0.peers"}}
                    - {{name: ANY, value: "peers.{namespace}.svc.cluster.local"}}
                  volumes: [{{name: shared, persistentVolumeClaim: {{claimName: {WORKSPACE_CLAIM}}}}}]
            """
        ),
        namespace,
    )
    wait_for(lambda: cluster.get("job", "peers", namespace)["status"].get("succeeded") == 2, 90, "both peers to succeed")
    pods = {p["spec"]["hostname"]: p for p in cluster.list("pods", namespace, selector="job-name=peers")}
    ips = [pods["peers-0"]["status"]["podIP"], pods["peers-1"]["status"]["podIP"]]
    assert ips[0] != ips[1]
    for hostname, pod in pods.items():
        first, second, own, any_peer = pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"].split()
        assert [first, second, own] == [*ips, hostname]
        assert any_peer in ips


def test_cluster_dns_answers_names_from_config_files_and_other_namespaces(cluster, namespace):
    # A server in one namespace behind a Service with a cluster IP; a client in another reads the
    # server's address from a mounted config file (nothing rewrites a file) and reaches it through
    # the system resolver: the Pod's /etc/resolv.conf names the dev cluster's DNS, as a kubelet's does.
    other = f"{namespace[:50]}-srv"
    cluster.create_namespace(other, pod_security="restricted")
    try:
        apply(cluster, textwrap.dedent(
            """
            apiVersion: v1
            kind: Pod
            metadata: {name: echo, labels: {app: echo}}
            spec:
              containers:
              - name: main
                image: busybox
                command: ["python", "-m", "http.server", "8080", "--bind", "$(POD_IP)", "--directory", "/srv"]
                env: [{name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}]
                readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
                volumeMounts: [{name: page, mountPath: /srv}]
              volumes: [{name: page, configMap: {name: page}}]
            ---
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: page}
            data: {index.html: served-from-the-other-namespace}
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: echo}
            spec: {selector: {app: echo}, ports: [{port: 8080}]}
            """), other)
        wait_for(lambda: (condition(cluster.get("pod", "echo", other), "Ready") or {}).get("status") == "True", 90, "the echo server to be Ready")
        server_ip = cluster.get("pod", "echo", other)["status"]["podIP"]
        apply(cluster, textwrap.dedent(
            f"""
            apiVersion: v1
            kind: ConfigMap
            metadata: {{name: client}}
            data: {{endpoint: "http://echo.{other}.svc:8080/"}}
            ---
            apiVersion: v1
            kind: Pod
            metadata: {{name: client}}
            spec:
              restartPolicy: Never
              containers:
              - name: main
                image: busybox
                command: ["python", "-c"]
                args:
                - |
                  import json, socket, urllib.request
                  url = open("/etc/client/endpoint").read().strip()
                  body = urllib.request.urlopen(url, timeout=10).read().decode()
                  names = {{n: socket.gethostbyname(n) for n in ("echo.{other}", "echo.{other}.svc.cluster.local",
                                                                 "kubernetes.default.svc")}}
                  try:
                      socket.gethostbyname("nothing-here.{other}.svc.cluster.local")
                      missing = "answered"
                  except socket.gaierror as e:
                      missing = "not found"
                  resolv = open("/etc/resolv.conf").read()
                  open("/dev/termination-log", "w").write(json.dumps(
                      {{"body": body, "names": names, "missing": missing, "resolv": resolv}}))
                volumeMounts: [{{name: config, mountPath: /etc/client}}]
              volumes: [{{name: config, configMap: {{name: client}}}}]
            """), namespace)
        pod = wait_for(lambda: (p := cluster.get("pod", "client", namespace))["status"].get("phase") in ("Succeeded", "Failed") and p,
                       90, "the client Pod to finish")
        assert pod["status"]["phase"] == "Succeeded", cluster.pod_log(namespace, "client", "main")
        report = json.loads(pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"])
        assert report["body"] == "served-from-the-other-namespace"
        assert report["names"] == {f"echo.{other}": server_ip, f"echo.{other}.svc.cluster.local": server_ip,
                                   "kubernetes.default.svc": "127.0.0.1"}
        assert report["missing"] == "not found"
        nameserver = report["resolv"].splitlines()[0].split()[1]
        assert nameserver.startswith("127.") and nameserver != "127.0.0.1", report["resolv"]
        assert f"search {namespace}.svc.cluster.local svc.cluster.local cluster.local" in report["resolv"]
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)


# --------------------------------------------------------------------------- waiting on conditions


def _crd(group: str, plural: str, kind: str) -> str:
    return json.dumps({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": True, "storage": True,
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
        },
    })


def test_waiting_for_a_crd_created_a_moment_ago_tolerates_its_empty_status(cluster):
    """Right after creation a CRD has no status: the harness waits instead of failing as kubectl does."""
    from devcluster import controlplane

    suffix = uuid.uuid4().hex[:6]
    names = [f"widgets{suffix}{i}" for i in range(5)]
    try:
        for name in names:
            cluster.kubectl("create", "-f", "-", input=_crd("waits.finetune.test", name, f"Widget{suffix}{name[-1]}"))
            # No pause between creating and waiting: the race a slow, cold machine loses.
            controlplane.wait_for_condition(cluster.state, [f"customresourcedefinition/{name}.waits.finetune.test"],
                                            "Established", timeout=60)
        for name in names:
            crd = cluster.get("customresourcedefinition", f"{name}.waits.finetune.test")
            assert condition(crd, "Established")["status"] == "True"
    finally:
        cluster.kubectl("delete", "customresourcedefinition", *[f"{n}.waits.finetune.test" for n in names],
                        "--wait=false", check=False)


def test_waiting_for_an_object_created_later_succeeds_and_a_timeout_names_what_it_saw(cluster, namespace):
    import threading

    from devcluster import controlplane

    later = threading.Timer(1.5, lambda: apply(cluster, textwrap.dedent("""
        apiVersion: v1
        kind: Pod
        metadata: {name: late}
        spec:
          restartPolicy: Never
          containers: [{name: main, image: busybox, command: ["sh", "-c", "sleep 30"]}]
        """), namespace))
    later.start()
    try:
        controlplane.wait_for_condition(cluster.state, ["pod/late"], "PodScheduled", namespace=namespace, timeout=60)
    finally:
        later.join()
    # A condition nothing ever sets: the error names the object, the condition and the last status.
    with pytest.raises(controlplane.ClusterError) as failure:
        controlplane.wait_for_condition(cluster.state, ["pod/late"], "NeverSet", namespace=namespace, timeout=2)
    message = str(failure.value)
    assert f"pod/late in namespace {namespace} to be NeverSet=True" in message
    assert "PodScheduled=True" in message
    with pytest.raises(controlplane.ClusterError, match="pod/absent .* the object does not exist yet"):
        controlplane.wait_for_condition(cluster.state, ["pod/absent"], "Ready", namespace=namespace, timeout=1)


RESTARTING_POD = """
apiVersion: v1
kind: Pod
metadata: {name: chatty}
spec:
  restartPolicy: OnFailure
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      n=$(cat /state/n 2>/dev/null || echo 0); n=$((n + 1)); echo $n > /state/n
      echo "run $n starts"
      if [ $n = 1 ]; then echo "run 1 fails"; exit 1; fi
      i=0; while true; do i=$((i + 1)); echo "run $n tick $i"; sleep 0.3; done
    volumeMounts: [{name: state, mountPath: /state}]
  volumes:
  - {name: state, emptyDir: {}}
"""


def test_kubectl_logs_and_exec_through_the_kubelet_api(cluster, namespace):
    # Plain kubectl: the API server calls the node agent's kubelet API at the Node's InternalIP.
    node = cluster.list("nodes")[0]
    assert {"type": "InternalIP", "address": "127.0.0.1"} in node["status"]["addresses"]
    assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] > 0
    apply(cluster, RESTARTING_POD, namespace)
    wait_for(
        lambda: (s := cluster.get("pod", "chatty", namespace)["status"].get("containerStatuses"))
        and s[0]["restartCount"] >= 1 and "running" in s[0]["state"],
        90,
        "pod chatty to restart once and run",
    )

    previous = cluster.kubectl("logs", "chatty", "-n", namespace, "--previous").stdout
    assert previous.splitlines() == ["run 1 starts", "run 1 fails"]

    wait_for(lambda: "run 2 tick 10" in cluster.kubectl("logs", "chatty", "-n", namespace).stdout, 30, "ten ticks (3 s)")
    current = cluster.kubectl("logs", "chatty", "-n", namespace).stdout.splitlines()
    assert current[0] == "run 2 starts" and all(line.startswith("run 2") for line in current)
    tail = cluster.kubectl("logs", "chatty", "-n", namespace, "--tail=2", "--timestamps").stdout.splitlines()
    assert len(tail) == 2 and all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z run 2 tick \d+$", line) for line in tail)
    recent = cluster.kubectl("logs", "chatty", "-n", namespace, "--since=1s").stdout.splitlines()
    assert recent and "run 2 starts" not in recent and len(recent) < len(current) + 10

    # exec runs in the container's filesystem view with its env; stdin, stdout, exit codes.
    exec_ = ["exec", "chatty", "-n", namespace, "--"]
    assert cluster.kubectl(*exec_, "sh", "-c", "cat /state/n; echo $HOSTNAME").stdout.split() == ["2", "chatty"]
    # The private /tmp holds nothing of the host's but the image's own directories, where the
    # Python environment lives under /tmp (a cache root made with mktemp, as CI's is).
    in_tmp = set(cluster.kubectl(*exec_, "ls", "-A", "/tmp").stdout.split())
    image_dirs = {Path(p).relative_to("/tmp").parts[0] for p in nodeagent.image_paths() if p.startswith("/tmp/")}
    assert in_tmp <= image_dirs, f"the Pod's /tmp shows {sorted(in_tmp - image_dirs)} of the host's /tmp"
    cluster.kubectl("exec", "-i", "chatty", "-n", namespace, "--", "sh", "-c", "cat > /state/from-stdin", input="piped\n")
    assert cluster.kubectl(*exec_, "cat", "/state/from-stdin").stdout == "piped\n"
    failed = cluster.kubectl(*exec_, "sh", "-c", "echo oops >&2; exit 3", check=False)
    assert failed.returncode == 3 and "oops" in failed.stderr

    # -f streams lines written after it started, and ends when the container does.
    follow = subprocess.Popen(
        [controlplane.kubectl_binary(Path(cluster.state.bin_dir)), f"--kubeconfig={cluster.kubeconfig}", "logs", "-f", "chatty", "-n", namespace, "--tail=1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        first = int(follow.stdout.readline().split()[-1])
        later = [follow.stdout.readline().strip() for _ in range(5)]
        assert later == [f"run 2 tick {first + k}" for k in range(1, 6)]
        cluster.kubectl("delete", "pod", "chatty", "-n", namespace, "--wait=false")
        follow.wait(timeout=60)
    finally:
        follow.kill()


def test_kubelet_api_serves_only_the_api_server(cluster):
    # Any other client, even one with a certificate from the cluster CA (the admin's), is refused.
    port = cluster.list("nodes")[0]["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
    pki = cluster.dir / "pki"
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    url = f"https://127.0.0.1:{port}/containerLogs/default/none/main"
    with pytest.raises((ssl.SSLError, ConnectionResetError, urllib.error.URLError)):
        urllib.request.urlopen(url, context=context, timeout=10).read()
    context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, context=context, timeout=10)
    assert refused.value.code == 403


def test_kubectl_logs_follow_and_exec_on_a_running_trainer_pod(cluster, namespace, operator):
    """What a user types when a FineTuneJob trains: `kubectl logs -f job/<name>-train` streams the
    trainer's progress lines while it runs and ends when it does; `kubectl exec` into the trainer
    Pod sees its mounted config and its environment, as on a real cluster."""
    from tests.helpers import NOOP_TRAINER, noop_finetunejob

    name = "watched"
    cluster.apply(noop_finetunejob(name, image=f"{NOOP_TRAINER}:slow"), namespace)

    def running_pod():
        pods = cluster.list("pods", namespace, selector=f"job-name={name}-train")
        return next((p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"), None)

    pod = wait_for(running_pod, 120, f"the train Pod of {name} to run")
    follow = subprocess.Popen(
        [controlplane.kubectl_binary(Path(cluster.state.bin_dir)), f"--kubeconfig={cluster.kubeconfig}",
         "logs", "-f", f"job/{name}-train", "-n", namespace],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        exec_ = ["exec", pod, "-n", namespace, "--"]
        config = json.loads(cluster.kubectl(*exec_, "cat", "/etc/finetune/config.yaml").stdout)
        uid = cluster.get("finetunejob", name, namespace)["metadata"]["uid"]
        assert config["output"]["uri"].endswith(f"/{name}-{uid}"), config["output"]  # the run's own location
        assert cluster.kubectl(*exec_, "printenv", "FINETUNE_PROGRESS_CONFIGMAP").stdout.strip() == f"{name}-progress"
        # Streamed while training: step lines arrive before the job ends, then the stream ends with it.
        steps = []
        for line in follow.stdout:
            if line.startswith("{") and '"step"' in line:
                steps.append(json.loads(line)["step"])
            if len(steps) >= 3:
                break
        assert steps == sorted(steps) and len(steps) >= 3, steps
        assert cluster.get("finetunejob", name, namespace)["status"].get("phase") == "Training"
        rest = follow.communicate(timeout=120)[0]
        assert follow.returncode == 0 and '"event":"finished"' in rest.replace(" ", ""), rest[-500:]
    finally:
        follow.kill()
