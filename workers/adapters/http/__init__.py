"""The operational HTTP endpoints: liveness, readiness and metrics (open); the admin endpoints (token)."""

from workers.adapters.http.admin import AdminServer, parse_switch
from workers.adapters.http.probes import LoopHeartbeat, ProbeServer

__all__ = ["AdminServer", "LoopHeartbeat", "ProbeServer", "parse_switch"]
