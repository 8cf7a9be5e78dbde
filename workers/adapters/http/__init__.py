"""The operational HTTP endpoint: liveness, readiness, Prometheus metrics and the kill switch."""

from workers.adapters.http.probes import LoopHeartbeat, ProbeServer, parse_switch

__all__ = ["LoopHeartbeat", "ProbeServer", "parse_switch"]
