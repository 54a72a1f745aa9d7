"""The Envoy edge: REST (three families) and native gRPC in front of the switchboard servers."""

from switchboard.server.edge.envoy import (
    TRANSCODED_SERVICES,
    EnvoyError,
    EnvoyProcess,
    EnvoySettings,
    envoy_binary,
    envoy_dir,
    render_config,
    transcoder_config,
    validate_config,
)

__all__ = [
    "TRANSCODED_SERVICES",
    "EnvoyError",
    "EnvoyProcess",
    "EnvoySettings",
    "envoy_binary",
    "envoy_dir",
    "render_config",
    "transcoder_config",
    "validate_config",
]
