"""The Kubernetes API client's configuration: :func:`make_api_client` (explicit host and token,
in-cluster service account, or kubeconfig) and :class:`TokenFile` (a bearer token file read
again as it rotates)."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubernetes import client as k8s_client

__all__ = ["TokenFile", "kubernetes_client", "make_api_client"]

log = logging.getLogger("ovsctl.k8s.apisource")  # one logger for all of the API source


def kubernetes_client():
    """The official client's ``kubernetes.client`` module, imported on first use only (an agent
    reading a YAML directory never needs it). The ``kubernetes`` package's ``__init__`` imports
    every part of the library (kubeconfig loading with its auth plugins, the dynamic client,
    pydantic, watch, stream, leader election): 0.1 s and 10 MiB the agent does not use. When
    nothing has imported the package yet, it is registered from its spec without running that
    ``__init__``; its submodules (``kubernetes.config`` included) still import as usual."""
    import importlib.util
    import sys

    if "kubernetes" not in sys.modules:
        spec = importlib.util.find_spec("kubernetes")
        if spec is not None and spec.submodule_search_locations is not None:
            sys.modules["kubernetes"] = importlib.util.module_from_spec(spec)
    import kubernetes.client

    return kubernetes.client


def make_api_client(
    *,
    host: str | None = None,
    token: str | None = None,
    token_file: str | None = None,
    ca_file: str | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    in_cluster: bool | None = None,
    pool_size: int = 16,
) -> k8s_client.ApiClient:
    """An :class:`ApiClient` from one of three configurations:

    - ``host`` (e.g. ``https://10.0.0.1:6443``, ``http://127.0.0.1:8001`` for ``kubectl
      proxy``, or a test server), with an optional bearer ``token`` or ``token_file`` (read
      again when the file changes, and at least every minute: projected service account
      tokens rotate) and an optional ``ca_file`` (the CA bundle that signs the server's
      certificate; default: the system's CAs);
    - ``in_cluster=True``: the pod's service account (``load_incluster_config``);
    - ``kubeconfig``: a kubeconfig file (``""`` for the default ``~/.kube/config`` or
      ``$KUBECONFIG``), with an optional ``context`` (``load_kube_config``).

    With none of them: in-cluster when ``KUBERNETES_SERVICE_HOST`` is set, else the default
    kubeconfig.
    """
    k8s_client = kubernetes_client()
    cfg = k8s_client.Configuration()
    if host:
        cfg.host = host.rstrip("/")
        if token_file:
            tf = TokenFile(token_file)
            cfg.api_key = {"authorization": f"Bearer {tf.read()}"}
            cfg.refresh_api_key_hook = tf.refresh
        elif token:
            cfg.api_key = {"authorization": f"Bearer {token}"}
        if ca_file:
            cfg.ssl_ca_cert = ca_file
        how = f"host {cfg.host}" + (f", CA {ca_file}" if ca_file else "")
        how += f", token from {token_file}" if token_file else ""
    else:
        if in_cluster is None and kubeconfig is None:
            in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        from kubernetes import config as k8s_config

        if in_cluster:
            k8s_config.load_incluster_config(client_configuration=cfg)
            how = "in-cluster service account"
        else:
            k8s_config.load_kube_config(
                config_file=kubeconfig or None, context=context, client_configuration=cfg
            )
            how = f"kubeconfig {kubeconfig or '(default)'}" + (
                f" context {context}" if context else ""
            )
    # every watcher keeps one connection open; leave room for the lists beside them
    cfg.connection_pool_maxsize = max(cfg.connection_pool_maxsize or 0, pool_size)
    log.info("kubernetes API client: %s -> %s", how, cfg.host)
    return k8s_client.ApiClient(cfg)


class TokenFile:
    """A bearer token kept in a file: read again when the file changes (another inode, mtime
    or size: a projected token is swapped in atomically) or `every` seconds have passed. A
    file that cannot be read keeps the last token (logged once until it reads again)."""

    def __init__(self, path: str, every: float = 60.0, clock=time.monotonic):
        self.path, self.every, self.clock = path, every, clock
        self.token = ""
        self._sig: tuple | None = None
        self._at = -math.inf
        self._failing = False
        self._lock = threading.Lock()  # every watcher thread refreshes before its requests

    def read(self) -> str:
        with open(self.path) as fh:
            token = fh.read().strip()
        if not token:
            raise ValueError(f"token file {self.path} is empty")
        st = os.stat(self.path)
        self._sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        self._at = self.clock()
        self.token = token
        return token

    def refresh(self, cfg) -> None:
        """Configuration.refresh_api_key_hook: called before every request (from every
        watcher's thread: one at a time, so a vanished file is logged once, not per thread)."""
        with self._lock:
            try:
                st = os.stat(self.path)
                sig = (st.st_ino, st.st_mtime_ns, st.st_size)
                if sig != self._sig or self.clock() - self._at >= self.every:
                    old = self.token
                    self.read()
                    if self.token != old:
                        log.info("kubernetes API client: token re-read from %s", self.path)
                self._failing = False
            except (OSError, ValueError) as e:
                if not self._failing:
                    log.warning("kubernetes API client: keeping the last token: %s", e)
                    self._failing = True
            token = self.token
        cfg.api_key = {**cfg.api_key, "authorization": f"Bearer {token}"}


class StatusConflict(RuntimeError):
    """The object changed between the read and the write (HTTP 409): retry from fresh state."""


def _request(api, method: str, path: str, body=None, timeout: float = 10.0):
    """One JSON request through `api`; returns (status, decoded body or None)."""
    import json

    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/merge-patch+json"
    m, url, hdrs, _, post = api.param_serialize(
        method=method, resource_path=path, header_params=headers, auth_settings=["BearerToken"]
    )
    resp = api.call_api(
        m,
        url,
        header_params=hdrs,
        body=body,  # a dict: the client encodes it (a str would be encoded twice)
        post_params=post,
        _request_timeout=(timeout, timeout),
    )
    resp.read()
    try:
        data = json.loads(resp.data) if resp.data else None
    except ValueError:
        data = None
    return resp.status, data


def _ingress_ips(obj: dict) -> tuple[str, ...]:
    """status.loadBalancer.ingress[].ip of a Service object, canonical (others left out)."""
    import ipaddress

    status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
    lb = status.get("loadBalancer") if isinstance(status.get("loadBalancer"), dict) else {}
    out = []
    for e in lb.get("ingress") if isinstance(lb.get("ingress"), list) else ():
        try:
            out.append(str(ipaddress.ip_address(e.get("ip"))))
        except (AttributeError, TypeError, ValueError):
            continue
    return tuple(out)


def write_lb_status(
    api, namespace: str, name: str, ingress, expect=None, timeout: float = 10.0
) -> None:
    """Set a Service's status.loadBalancer.ingress to `ingress` (IP addresses; () clears it).
    `expect`: the ingress addresses the caller computed `ingress` from (its cache's view);
    the GET must still show them, else StatusConflict is raised without writing (the caller's
    view was stale: it computes again once its cache has the newer object). The merge PATCH
    of services/NAME/status carries the GET's resourceVersion, so a Service changed between
    the GET and the PATCH is not overwritten either: the server answers 409, raised as
    StatusConflict. Other failures raise RuntimeError naming the Service and the HTTP
    status. A Service that is gone: nothing to write."""
    path = f"/api/v1/namespaces/{namespace}/services/{name}"
    status, obj = _request(api, "GET", path, timeout=timeout)
    if status == 404:
        return  # gone: nothing to write
    if status != 200 or not isinstance(obj, dict):
        raise RuntimeError(f"GET Service {namespace}/{name}: HTTP {status}")
    if expect is not None and _ingress_ips(obj) != tuple(expect):
        raise StatusConflict(
            f"Service {namespace}/{name}: status.loadBalancer.ingress is "
            f"[{', '.join(_ingress_ips(obj))}], not [{', '.join(expect)}] as computed: "
            "recomputed from fresh state"
        )
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    body = {
        "metadata": {"resourceVersion": rv} if rv else {},
        "status": {"loadBalancer": {"ingress": [{"ip": a} for a in ingress]}},
    }
    status, reply = _request(api, "PATCH", path + "/status", body=body, timeout=timeout)
    if status == 409:
        raise StatusConflict(f"PATCH Service {namespace}/{name} status: conflict (HTTP 409)")
    if status not in (200, 201):
        msg = reply.get("message", "") if isinstance(reply, dict) else ""
        raise RuntimeError(f"PATCH Service {namespace}/{name} status: HTTP {status} {msg}")
