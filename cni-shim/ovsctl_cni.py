"""ovsctl-cni: the CNI plugin for ovsctl (the module; `ovsctl-cni` beside it is the executable).

kubelet (or any CNI runtime) runs `ovsctl-cni` with the CNI_* environment
variables set and the network configuration on stdin. The shim validates the
invocation the way the reference ``skel`` package does, then forwards the
request to the node's ovsctl agent over a unix stream socket and prints the
agent's answer as a CNI result or CNI error on stdout.

Standard library only, and only modules that cost nothing to import: this
runs once per pod operation and the interpreter start is most of its cost.
`-IS` keeps the interpreter from reading site-packages or the environment;
JSON goes through the json module's own C parts (`_json`) and the socket is
a plain `_socket`, because `import json` / `import socket` would pull in re,
enum and collections: 15-20 ms, more than the agent needs for a whole ADD.

Wire protocol (see docs/cni.md): the shim sends ONE JSON object followed by
"\\n" and shuts down its write side; the agent answers with ONE JSON object,
``{"result": ...}`` or ``{"error": {"code", "msg", "details"}}``, and closes.
"""

import _socket
import errno
import posix
import sys
import time

try:
    from _json import encode_basestring_ascii as _ascii
    from _json import make_encoder as _make_encoder
    from _json import make_scanner as _make_scanner
except ImportError:  # an interpreter without the C accelerator: the json module then
    _make_scanner = None

SPEC_VERSION = "1.1.0"
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
DEFAULT_SOCKET = "/run/ovsctl/cni.sock"
DEFAULT_TIMEOUT = 60.0
MAX_REPLY_BYTES = 16 * 1024 * 1024
MAX_REQUEST_BYTES = 4 << 20  # the agent's limit (ovsctl/cniserver.py MAX_REQUEST)
ABOUT = "ovsctl-cni: Open vSwitch CNI plugin shim (forwards to the ovsctl agent)"

# Well-known CNI error codes (SPEC.md, "Error" section).
ERR_INCOMPATIBLE_VERSION = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ENV = 4
ERR_IO = 5
ERR_DECODE = 6
ERR_INVALID_CONFIG = 7
ERR_TRY_AGAIN_LATER = 11
ERR_PLUGIN_NOT_AVAILABLE = 50

# Environment variables and the commands that require them (as skel does).
# CNI_ARGS is always optional; CNI_NETNS is optional for DEL.
_ENV_VARS = (
    ("CNI_COMMAND", ("ADD", "CHECK", "DEL", "GC", "STATUS", "VERSION")),
    ("CNI_CONTAINERID", ("ADD", "CHECK", "DEL")),
    ("CNI_NETNS", ("ADD", "CHECK")),
    ("CNI_IFNAME", ("ADD", "CHECK", "DEL")),
    ("CNI_ARGS", ()),
    ("CNI_PATH", ("ADD", "CHECK", "DEL", "GC", "STATUS")),
)
_AGENT_COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC")
_COMMANDS = _AGENT_COMMANDS + ("VERSION",)
# Lowest config cniVersion that may carry each command.
_MIN_VERSION = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}

# Container IDs and network names: an alphanumeric, then [alnum _ . -]*.
_NAME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_REST = _NAME_FIRST | frozenset("_.-")
_MAX_IFNAME_BYTES = 15
_MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with its terminating NUL

# Keys that only exist from CNI 1.1.0 on; dropped from older-format results.
_IFACE_KEYS_1_1 = ("mtu", "socketPath", "pciID")
_ROUTE_KEYS_1_1 = ("mtu", "advmss", "priority", "table", "scope")

# connect()/send()/recv() errnos that mean "the agent is not there (yet)".
_UNREACHABLE_ERRNOS = frozenset(
    {
        errno.ENOENT,
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.EAGAIN,
        errno.ETIMEDOUT,
        errno.ENOTCONN,
    }
)


class CNIError(Exception):
    """A failure to report as a CNI error object."""

    def __init__(self, code, msg, details=""):
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details


class AgentUnreachable(CNIError):
    """The agent could not be reached or went away without answering."""

    def __init__(self, msg, details=""):
        super().__init__(ERR_TRY_AGAIN_LATER, msg, details)


def _version_tuple(version):
    return tuple(int(part) for part in version.split("."))


def _valid_name(name):
    return bool(name) and name[0] in _NAME_FIRST and all(c in _NAME_REST for c in name)


# --------------------------------------------------------------------------
# JSON: json.loads/json.dumps semantics on the C scanner and encoder.

_JSON_SPACE = " \t\n\r"


class _ScanContext:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity, as json.loads takes them


def _no_default(obj):
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


if _make_scanner is not None:
    _scan = _make_scanner(_ScanContext())
    _enc = _make_encoder(None, _no_default, _ascii, None, ": ", ", ", False, False, True)
    _enc_compact = _make_encoder(None, _no_default, _ascii, None, ":", ",", False, False, True)


def json_loads(text):
    """json.loads(text) for a str; ValueError when it is not one JSON value."""
    if _make_scanner is None:
        import json

        return json.loads(text)
    end, n = 0, len(text)
    while end < n and text[end] in _JSON_SPACE:
        end += 1
    try:
        value, end = _scan(text, end)
    except Exception:  # noqa: BLE001 - not JSON: see below
        return _json_error(text)
    while end < n and text[end] in _JSON_SPACE:
        end += 1
    if end != n:
        return _json_error(text)
    return value


def _json_error(text):
    """Raise json.loads's own error for text that is not one JSON value (line, column, the BOM
    hint). Only here is the json module loaded; the C scanner also needs it to report a
    syntax error inside a value."""
    import json

    return json.loads(text)


def json_dumps(obj, compact=False):
    """json.dumps(obj) (compact: separators "," and ":")."""
    if _make_scanner is None:
        import json

        return json.dumps(obj, separators=(",", ":") if compact else None)
    return "".join((_enc_compact if compact else _enc)(obj, 0))


# --------------------------------------------------------------------------
# Environment


def validate_container_id(container_id):
    if not _valid_name(container_id):
        raise CNIError(ERR_INVALID_ENV, "invalid characters in containerID", container_id)


def validate_ifname(ifname):
    """Linux interface name rules, as skel's ValidateInterfaceName."""
    if not ifname:
        raise CNIError(ERR_INVALID_ENV, "interface name is empty")
    try:
        ifname.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 arrive as surrogates
        raise CNIError(ERR_INVALID_ENV, "interface name is not valid UTF-8", repr(ifname)) from None
    if len(ifname.encode("utf-8", "surrogateescape")) > _MAX_IFNAME_BYTES:
        raise CNIError(
            ERR_INVALID_ENV,
            "interface name is too long",
            f"interface name should be less than {_MAX_IFNAME_BYTES + 1} characters",
        )
    if ifname in (".", ".."):
        raise CNIError(ERR_INVALID_ENV, "interface name is . or ..")
    for char in ifname:
        if char in "/:" or char.isspace():
            raise CNIError(
                ERR_INVALID_ENV,
                "interface name contains / or : or whitespace characters",
                ifname,
            )


def parse_cni_args(raw):
    """Parse CNI_ARGS ("K=V;K2=V2") into a dict of str -> str.

    Empty segments (e.g. a trailing ";") are skipped; every other segment
    needs a non-empty key and an "=". The value is everything after the
    first "=". A repeated key keeps its last value.
    """
    args = {}
    if not raw:
        return args
    for pair in raw.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CNIError(ERR_INVALID_ENV, "malformed CNI_ARGS", f"invalid pair {pair!r}")
        args[key] = value
    return args


def read_env(environ):
    """Return (command, values); raise CNIError(4) as skel would.

    ``values`` maps each CNI_* variable to its value ("" when unset), with
    CNI_ARGS already parsed into a dict.
    """
    command = environ.get("CNI_COMMAND", "")
    if command and command not in _COMMANDS:
        raise CNIError(ERR_INVALID_ENV, f"unknown CNI_COMMAND: {command}")
    values = {}
    missing = []
    for name, required_for in _ENV_VARS:
        value = environ.get(name, "")
        values[name] = value
        if not value:
            if name == "CNI_COMMAND" or command in required_for:
                missing.append(name)
            continue
        if command in required_for:
            if name == "CNI_CONTAINERID":
                validate_container_id(value)
            elif name == "CNI_IFNAME":
                validate_ifname(value)
    if missing:
        raise CNIError(ERR_INVALID_ENV, f"required env variables [{','.join(missing)}] missing")
    values["CNI_ARGS"] = parse_cni_args(values["CNI_ARGS"])
    return command, values


# --------------------------------------------------------------------------
# Network configuration


def read_stdin(stdin):
    if isinstance(stdin, (bytes, str)):
        data = stdin
    else:
        try:
            data = getattr(stdin, "buffer", stdin).read()
        except OSError as exc:
            raise CNIError(ERR_IO, "error reading from stdin", str(exc)) from None
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CNIError(ERR_DECODE, "network config is not UTF-8", str(exc)) from None
    return data


def parse_config(data):
    """Decode the network configuration: a JSON object (else code 6)."""
    try:
        config = json_loads(data)
    except ValueError as exc:
        raise CNIError(ERR_DECODE, "error decoding network config", str(exc)) from None
    if not isinstance(config, dict):
        raise CNIError(
            ERR_DECODE,
            "error decoding network config",
            f"expected a JSON object, got {type(config).__name__}",
        )
    return config


def config_version(config):
    """The config's cniVersion if it is one we support, else None."""
    version = config.get("cniVersion")
    return version if isinstance(version, str) and version in SUPPORTED_VERSIONS else None


def validate_config(command, config):
    """Check the fields the shim itself relies on; return (socket, timeout)."""
    version = config.get("cniVersion")
    if version is None or version == "":
        raise CNIError(
            ERR_INCOMPATIBLE_VERSION,
            "incompatible CNI versions",
            f"network config has no cniVersion; plugin supports {', '.join(SUPPORTED_VERSIONS)}",
        )
    if not isinstance(version, str) or version not in SUPPORTED_VERSIONS:
        raise CNIError(
            ERR_INCOMPATIBLE_VERSION,
            "incompatible CNI versions",
            f"config is {json_dumps(version)}, plugin supports {', '.join(SUPPORTED_VERSIONS)}",
        )
    name = config.get("name")
    if not isinstance(name, str) or not name:
        raise CNIError(ERR_INVALID_CONFIG, "missing network name")
    if not _valid_name(name):
        raise CNIError(ERR_INVALID_CONFIG, "invalid characters found in network name", name)
    plugin_type = config.get("type")
    if not isinstance(plugin_type, str) or not plugin_type:
        raise CNIError(ERR_INVALID_CONFIG, "missing plugin type")
    floor = _MIN_VERSION.get(command)
    if floor and _version_tuple(version) < _version_tuple(floor):
        raise CNIError(
            ERR_INCOMPATIBLE_VERSION,
            f"config version does not allow {command}",
            f"config is {version}, {command} needs {floor} or later",
        )
    sock_path = config.get("socket", DEFAULT_SOCKET)
    if not isinstance(sock_path, str) or not sock_path:
        raise CNIError(ERR_INVALID_CONFIG, 'invalid "socket": must be a non-empty string')
    if len(sock_path.encode("utf-8", "surrogateescape")) > _MAX_SOCKET_PATH:
        raise CNIError(
            ERR_INVALID_CONFIG,
            'invalid "socket": path too long for a unix socket',
            f"at most {_MAX_SOCKET_PATH} bytes",
        )
    timeout = config.get("timeout", DEFAULT_TIMEOUT)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not timeout > 0
        or timeout == float("inf")
    ):
        raise CNIError(ERR_INVALID_CONFIG, 'invalid "timeout": must be a positive number')
    return sock_path, float(timeout)


# --------------------------------------------------------------------------
# Agent exchange


def _classify_os_error(exc, what):
    if isinstance(exc, TimeoutError) or getattr(exc, "errno", None) in _UNREACHABLE_ERRNOS:
        return AgentUnreachable(f"ovsctl agent unreachable: {what}", str(exc))
    return CNIError(ERR_IO, f"I/O error talking to the ovsctl agent: {what}", str(exc))


def call_agent(sock_path, request, timeout):
    """Send one request and return the agent's decoded reply (a dict)."""
    payload = json_dumps(request, compact=True).encode("utf-8") + b"\n"
    if len(payload) > MAX_REQUEST_BYTES:  # the agent would refuse it: say so, not "try again"
        raise CNIError(
            ERR_INVALID_CONFIG,
            f"network config too large: the limit is {MAX_REQUEST_BYTES} bytes (4 MiB)",
            f"the request to the ovsctl agent would be {len(payload)} bytes",
        )
    deadline = time.monotonic() + timeout

    def remaining():
        left = deadline - time.monotonic()
        if left <= 0:
            raise AgentUnreachable(
                "ovsctl agent unreachable: timed out", f"no reply within {timeout:g}s"
            )
        return left

    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    except OSError as exc:
        raise CNIError(ERR_IO, "cannot create a unix socket", str(exc)) from None
    chunks = []
    size = 0
    try:
        stage = f"connect to {sock_path}"
        try:
            sock.settimeout(remaining())
            sock.connect(sock_path)
            stage = "send request"
            sock.settimeout(remaining())
            sock.sendall(payload)
            sock.shutdown(_socket.SHUT_WR)
            stage = "read reply"
            while True:
                sock.settimeout(remaining())
                chunk = sock.recv(65536)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_REPLY_BYTES:
                    raise CNIError(
                        ERR_IO,
                        "reply from the ovsctl agent is too large",
                        f"more than {MAX_REPLY_BYTES} bytes",
                    )
                chunks.append(chunk)
        except OSError as exc:
            raise _classify_os_error(exc, stage) from None
    finally:
        sock.close()
    data = b"".join(chunks)
    if not data.strip():
        raise AgentUnreachable(
            "ovsctl agent closed the connection without a reply", f"socket {sock_path}"
        )
    try:
        reply = json_loads(data.decode("utf-8"))
    except ValueError as exc:
        raise CNIError(ERR_IO, "malformed reply from the ovsctl agent", str(exc)) from None
    if not isinstance(reply, dict) or not ("result" in reply or "error" in reply):
        raise CNIError(
            ERR_IO,
            "malformed reply from the ovsctl agent",
            'expected an object with "result" or "error"',
        )
    return reply


def agent_error(error):
    """Turn the agent's "error" member into a CNIError."""
    if not isinstance(error, dict):
        return CNIError(ERR_IO, "malformed error from the ovsctl agent", json_dumps(error))
    code = error.get("code")
    if isinstance(code, bool) or not isinstance(code, int) or code <= 0:
        return CNIError(ERR_IO, "malformed error from the ovsctl agent", json_dumps(error))
    msg = error.get("msg")
    details = error.get("details")
    return CNIError(
        code,
        msg if isinstance(msg, str) else "ovsctl agent error",
        details if isinstance(details, str) else ("" if details is None else json_dumps(details)),
    )


# --------------------------------------------------------------------------
# Results


def convert_result(result, version):
    """Render the agent's CNI 1.x result in the config's cniVersion format."""
    out = {"cniVersion": version}
    for key, value in result.items():
        if key != "cniVersion":
            out[key] = value
    legacy = version.startswith("0.")
    old = version != "1.1.0"
    ips = out.get("ips")
    if isinstance(ips, list):
        new_ips = []
        for ip in ips:
            if isinstance(ip, dict):
                ip = dict(ip)
                ip.pop("version", None)
                if legacy:
                    address = ip.get("address")
                    ip["version"] = "6" if isinstance(address, str) and ":" in address else "4"
            new_ips.append(ip)
        out["ips"] = new_ips
    if old:
        for key, drop in (("interfaces", _IFACE_KEYS_1_1), ("routes", _ROUTE_KEYS_1_1)):
            items = out.get(key)
            if isinstance(items, list):
                out[key] = [
                    {k: v for k, v in item.items() if k not in drop}
                    if isinstance(item, dict)
                    else item
                    for item in items
                ]
    return out


def version_info():
    return {"cniVersion": SPEC_VERSION, "supportedVersions": list(SUPPORTED_VERSIONS)}


# --------------------------------------------------------------------------
# Entry point


def run(environ, stdin):
    """Handle one invocation; return the object to print, or None.

    Raises CNIError for anything to report as a CNI error. Once the config is
    decoded, the error carries ``version``: the config's cniVersion if it is a
    supported one, to stamp on the printed error.
    """
    command, env = read_env(environ)
    if command == "VERSION":
        return version_info()
    config = parse_config(read_stdin(stdin))
    try:
        sock_path, timeout = validate_config(command, config)
        request = {
            "command": command,
            "containerID": env["CNI_CONTAINERID"],
            "netns": env["CNI_NETNS"],
            "ifname": env["CNI_IFNAME"],
            "args": env["CNI_ARGS"],
            "path": env["CNI_PATH"],
            "config": config,
        }
        try:
            reply = call_agent(sock_path, request, timeout)
        except CNIError as exc:
            if command == "STATUS" and exc.code in (ERR_TRY_AGAIN_LATER, ERR_IO):
                raise CNIError(ERR_PLUGIN_NOT_AVAILABLE, exc.msg, exc.details) from None
            raise
        if "error" in reply and reply["error"] is not None:
            raise agent_error(reply["error"])
        if command != "ADD":
            return None
        result = reply.get("result")
        if not isinstance(result, dict):
            raise CNIError(ERR_IO, "ovsctl agent returned no result for ADD", json_dumps(result))
        return convert_result(result, config["cniVersion"])
    except CNIError as exc:
        exc.version = config_version(config)
        raise


def _error_object(exc, version):
    return {
        "cniVersion": version or SPEC_VERSION,
        "code": exc.code,
        "msg": exc.msg,
        "details": exc.details,
    }


def main(environ=None, stdin=None, stdout=None, stderr=None):
    """Run the plugin; print the result or error; return the exit status."""
    if environ is None:  # os.environ, without importing os (1 ms of every exec, a seventh)
        enc, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
        environ = {k.decode(enc, errors): v.decode(enc, errors) for k, v in posix.environ.items()}
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    try:
        output = run(environ, stdin)
        status = 0
    except CNIError as exc:
        output = _error_object(exc, getattr(exc, "version", None))
        status = 1
        if exc.code == ERR_INVALID_ENV and not environ.get("CNI_COMMAND"):
            try:
                stderr.write(
                    f"{ABOUT}\nCNI protocol versions supported: {', '.join(SUPPORTED_VERSIONS)}\n"
                )
            except Exception:  # stderr is best effort
                pass
    except OSError as exc:
        output = _error_object(
            CNIError(ERR_IO, "I/O failure", f"{type(exc).__name__}: {exc}"), None
        )
        status = 1
    except Exception as exc:  # never a traceback to the runtime
        output = _error_object(
            CNIError(ERR_IO, "internal error in ovsctl-cni", f"{type(exc).__name__}: {exc}"), None
        )
        status = 1
    if output is not None:
        try:
            stdout.write(json_dumps(output) + "\n")
            stdout.flush()
        except Exception:  # nowhere left to report it
            return 1
    return status


if __name__ == "__main__":  # python3 -IS ovsctl_cni.py works too (compiled at each run)
    sys.exit(main())
