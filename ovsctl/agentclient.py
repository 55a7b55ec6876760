"""Reading the local agent's HTTP endpoint (/status, /flows, /cluster) for the CLI tools.

The agent serves JSON on port 9476 (`metrics_port`) of its node; the tools ask
http://127.0.0.1:9476 unless told otherwise (`--agent URL` or the environment variable
OVSCTL_AGENT). In the netns lab each node's agent is reachable inside the node's network
namespace only, so `ovsctl lab ...` runs the tools there.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:9476"


class AgentUnreachable(RuntimeError):
    pass


def default_url() -> str:
    return os.environ.get("OVSCTL_AGENT") or DEFAULT_URL


def get(path: str, url: str | None = None, timeout: float = 5.0):
    """GET url+path as JSON; AgentUnreachable when there is no answer or no JSON."""
    base = (url or default_url()).rstrip("/")
    try:
        with urllib.request.urlopen(base + path, timeout=timeout) as r:
            return json.loads(r.read().decode())
    except urllib.error.HTTPError as e:
        raise AgentUnreachable(f"{base}{path}: HTTP {e.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise AgentUnreachable(f"{base}{path}: {reason}") from None
