"""A minimal CRI (`runtime.v1`) client for the runtime tests: just the messages and fields we
use, declared with protobuf's descriptor API (no generated stubs, no .proto file), called over
gRPC on a unix socket. Field numbers are those of the public CRI API (k8s.io/cri-api
pkg/apis/runtime/v1/api.proto); fields we do not declare are skipped by the decoder."""

from __future__ import annotations

import json

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_STRING, _BOOL, _UINT32, _INT32, _INT64, _MSG, _ENUM = (
    _F.TYPE_STRING,
    _F.TYPE_BOOL,
    _F.TYPE_UINT32,
    _F.TYPE_INT32,
    _F.TYPE_INT64,
    _F.TYPE_MESSAGE,
    _F.TYPE_ENUM,
)
_REPEATED = object()

# message name -> [(field name, number, type, type name or None, repeated?)]
_SCHEMA: dict[str, list[tuple]] = {
    "VersionRequest": [("version", 1, _STRING)],
    "VersionResponse": [
        ("version", 1, _STRING),
        ("runtime_name", 2, _STRING),
        ("runtime_version", 3, _STRING),
        ("runtime_api_version", 4, _STRING),
    ],
    "PodSandboxMetadata": [
        ("name", 1, _STRING),
        ("uid", 2, _STRING),
        ("namespace", 3, _STRING),
        ("attempt", 4, _UINT32),
    ],
    "PortMapping": [
        ("protocol", 1, _ENUM, "Protocol"),
        ("container_port", 2, _INT32),
        ("host_port", 3, _INT32),
        ("host_ip", 4, _STRING),
    ],
    "PodSandboxConfig": [
        ("metadata", 1, _MSG, "PodSandboxMetadata"),
        ("hostname", 2, _STRING),
        ("log_directory", 3, _STRING),
        ("port_mappings", 5, _MSG, "PortMapping", _REPEATED),
    ],
    "RunPodSandboxRequest": [
        ("config", 1, _MSG, "PodSandboxConfig"),
        ("runtime_handler", 2, _STRING),
    ],
    "RunPodSandboxResponse": [("pod_sandbox_id", 1, _STRING)],
    "StopPodSandboxRequest": [("pod_sandbox_id", 1, _STRING)],
    "StopPodSandboxResponse": [],
    "RemovePodSandboxRequest": [("pod_sandbox_id", 1, _STRING)],
    "RemovePodSandboxResponse": [],
    "PodSandboxStatusRequest": [("pod_sandbox_id", 1, _STRING), ("verbose", 2, _BOOL)],
    "PodIP": [("ip", 1, _STRING)],
    "PodSandboxNetworkStatus": [
        ("ip", 1, _STRING),
        ("additional_ips", 2, _MSG, "PodIP", _REPEATED),
    ],
    "PodSandboxStatus": [
        ("id", 1, _STRING),
        ("metadata", 2, _MSG, "PodSandboxMetadata"),
        ("state", 3, _ENUM, "PodSandboxState"),
        ("created_at", 4, _INT64),
        ("network", 5, _MSG, "PodSandboxNetworkStatus"),
    ],
    "InfoEntry": [("key", 1, _STRING), ("value", 2, _STRING)],
    "PodSandboxStatusResponse": [
        ("status", 1, _MSG, "PodSandboxStatus"),
        ("info", 2, _MSG, "InfoEntry", _REPEATED),  # map<string,string> on the wire
    ],
    "PodSandboxFilter": [("id", 1, _STRING)],
    "ListPodSandboxRequest": [("filter", 1, _MSG, "PodSandboxFilter")],
    "PodSandbox": [
        ("id", 1, _STRING),
        ("metadata", 2, _MSG, "PodSandboxMetadata"),
        ("state", 3, _ENUM, "PodSandboxState"),
    ],
    "ListPodSandboxResponse": [("items", 1, _MSG, "PodSandbox", _REPEATED)],
}
_ENUMS = {
    "Protocol": ["TCP", "UDP", "SCTP"],
    "PodSandboxState": ["SANDBOX_READY", "SANDBOX_NOTREADY"],
}
SANDBOX_READY, SANDBOX_NOTREADY = 0, 1


def _build() -> dict:
    fd = descriptor_pb2.FileDescriptorProto(
        name="ovsctl_tests_cri_runtime_v1.proto", package="runtime.v1", syntax="proto3"
    )
    for name, values in _ENUMS.items():
        e = fd.enum_type.add(name=name)
        for i, v in enumerate(values):
            e.value.add(name=v, number=i)
    for name, fields in _SCHEMA.items():
        m = fd.message_type.add(name=name)
        for f in fields:
            fname, num, ftype = f[:3]
            field = m.field.add(name=fname, number=num, type=ftype)
            field.label = _F.LABEL_REPEATED if _REPEATED in f else _F.LABEL_OPTIONAL
            if ftype in (_MSG, _ENUM):
                field.type_name = f".runtime.v1.{f[3]}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"runtime.v1.{name}"))
        for name in _SCHEMA
    }


M = _build()


class CRIError(RuntimeError):
    def __init__(self, rpc: str, err: grpc.RpcError):
        self.code = err.code()
        self.details = err.details()
        super().__init__(f"{rpc}: {self.code.name}: {self.details}")


class RuntimeService:
    """`runtime.v1.RuntimeService` over `unix://<socket>`."""

    def __init__(self, socket_path: str, timeout: float = 120):
        self.channel = grpc.insecure_channel(f"unix://{socket_path}")
        self.timeout = timeout

    def close(self) -> None:
        self.channel.close()

    def _call(self, rpc: str, req_type: str, resp_type: str, **fields):
        method = self.channel.unary_unary(
            f"/runtime.v1.RuntimeService/{rpc}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=M[resp_type].FromString,
        )
        try:
            return method(M[req_type](**fields), timeout=self.timeout)
        except grpc.RpcError as e:
            raise CRIError(rpc, e) from None

    def version(self):
        return self._call("Version", "VersionRequest", "VersionResponse", version="v1")

    def run_pod_sandbox(
        self, name: str, namespace: str, uid: str, port_mappings: list[dict] = ()
    ) -> str:
        config = M["PodSandboxConfig"](
            metadata=M["PodSandboxMetadata"](name=name, namespace=namespace, uid=uid),
            hostname=name,
            port_mappings=[M["PortMapping"](**pm) for pm in port_mappings],
        )
        resp = self._call(
            "RunPodSandbox", "RunPodSandboxRequest", "RunPodSandboxResponse", config=config
        )
        return resp.pod_sandbox_id

    def stop_pod_sandbox(self, sandbox_id: str) -> None:
        self._call(
            "StopPodSandbox",
            "StopPodSandboxRequest",
            "StopPodSandboxResponse",
            pod_sandbox_id=sandbox_id,
        )

    def remove_pod_sandbox(self, sandbox_id: str) -> None:
        self._call(
            "RemovePodSandbox",
            "RemovePodSandboxRequest",
            "RemovePodSandboxResponse",
            pod_sandbox_id=sandbox_id,
        )

    def pod_sandbox_status(self, sandbox_id: str, verbose: bool = True):
        """(status message, info dict with its JSON values decoded)."""
        resp = self._call(
            "PodSandboxStatus",
            "PodSandboxStatusRequest",
            "PodSandboxStatusResponse",
            pod_sandbox_id=sandbox_id,
            verbose=verbose,
        )
        info = {}
        for e in resp.info:
            try:
                info[e.key] = json.loads(e.value)
            except ValueError:
                info[e.key] = e.value
        return resp.status, info

    def list_pod_sandbox(self) -> list:
        return list(
            self._call("ListPodSandbox", "ListPodSandboxRequest", "ListPodSandboxResponse").items
        )
