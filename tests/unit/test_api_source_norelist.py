"""No periodic relist by default: the watches roll over and resume from their resourceVersion,
so the API server is listed once per kind (and again only after a 410 Gone, see
test_api_source.py's 410 tests), however long the agent runs."""

from __future__ import annotations

from ovsctl.k8s.apisource import APISource
from ovsctl.k8s.model import ACCEPTED_KINDS
from ovsctl.lab.apiserver import FakeAPI
from ovsctl.util import wait_until
from tests.unit.test_api_source import (
    ADDED,
    MODIFIED,
    T,
    all_watching,
    converge,
    pod,
    relabel,
    start,
    summary,
)


def test_watches_roll_over_and_resume_without_ever_relisting():
    with FakeAPI() as api:
        p1 = pod("p1", "10.244.1.1")
        api.create(p1)
        src = APISource(host=api.url, backoff_initial=0.02, backoff_max=0.2, request_timeout=5)
        try:
            assert src.resync_period == 0
            rec = start(src)
            all_watching(api)
            for n in range(3):  # the server ends every watch (its timeoutSeconds) ...
                rv = src.resource_version["Pod"]
                assert api.end_watches() == len(ACCEPTED_KINDS)
                # ... and changes land while no watch is open
                api.update(relabel(p1, rev=str(n)))
                api.create(pod(f"q{n}", f"10.244.2.{n + 1}"))
                wait_until(
                    lambda rv=rv: (
                        api.watch_requests("Pod")[-1]["resourceVersion"] == rv
                        and api.open_watches() == len(ACCEPTED_KINDS)
                    ),
                    T,
                    "every kind watching again, Pods from where they stopped",
                )
                converge(rec, api)
            # every change arrived through the resumed watches: one list per kind, no relist
            assert summary(rec.since(1)).count((MODIFIED, ("Pod", "a", "p1"))) == 3
            assert sorted(k for e, k in summary(rec.since(1)) if e == ADDED) == [
                ("Pod", "a", f"q{n}") for n in range(3)
            ]
            assert {k: len(api.list_requests(k)) for k in ACCEPTED_KINDS} == dict.fromkeys(
                ACCEPTED_KINDS, 1
            )
            assert set(src.relists_total.values()) == {0}
            # a watch lasts its full timeout: none is cut short for a resync
            assert {q["timeoutSeconds"] for q in api.watch_requests("Pod")} == {
                str(src.watch_timeout)
            }
        finally:
            src.stop()
