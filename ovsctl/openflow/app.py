"""The os-ken app shell: turns switch events into calls on a listener (the Controller) and
does nothing else. It knows neither flows nor rounds."""

from __future__ import annotations

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)
from os_ken.ofproto import ofproto_v1_4

from ovsctl.openflow import osken_compat


class OvsctlApp(app_manager.OSKenApp):
    """Forwards switch events to `listener`: on_connect(dp), on_disconnect(dp),
    on_reply(msg, final), on_packet_in(msg), on_error(msg)."""

    OFP_VERSIONS = [ofproto_v1_4.OFP_VERSION]
    listener = None  # set by start()

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state_change(self, ev):
        if self.listener is None:
            return
        if ev.state == MAIN_DISPATCHER:
            self.listener.on_connect(ev.datapath)
        elif ev.state == DEAD_DISPATCHER:
            self.listener.on_disconnect(ev.datapath)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _barrier_reply(self, ev):
        self.listener.on_reply(ev.msg, final=True)

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def _flow_stats_reply(self, ev):
        msg = ev.msg
        self.listener.on_reply(msg, final=not (msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev):
        self.listener.on_packet_in(ev.msg)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _error(self, ev):
        self.listener.on_error(ev.msg)


def start(listener) -> OvsctlApp:
    """Start os-ken's apps (native threads, no monkey-patching): the handshake app without a
    TCP listener, and OvsctlApp reporting to `listener`."""
    apps = osken_compat.start_apps(
        {
            osken_compat.ChannelHandler.__module__: osken_compat.ChannelHandler,
            OvsctlApp.__module__: OvsctlApp,
        }
    )
    app = next(a for a in apps if isinstance(a, OvsctlApp))
    app.listener = listener
    return app
