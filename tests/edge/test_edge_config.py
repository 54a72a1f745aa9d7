"""The rendered Envoy configuration: Envoy itself accepts it, and it says what the edge needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard.server.app.services import TRANSCODED_SERVICES
from switchboard.server.edge.envoy import (
    EnvoyError,
    EnvoySettings,
    envoy_binary,
    envoy_dir,
    render_config,
    validate_config,
)

pytestmark = pytest.mark.envoy

REPO = Path(__file__).resolve().parents[2]


def settings(**overrides: object) -> EnvoySettings:
    values: dict[str, object] = {
        "listen_port": 8080,
        "admin_port": 9901,
        "upstreams": [("127.0.0.1", 50051)],
        "descriptor_path": REPO / "gen" / "switchboard.binpb",
    }
    values.update(overrides)
    return EnvoySettings(**values)  # type: ignore[arg-type]


@pytest.mark.unit
def test_paths() -> None:
    assert (envoy_dir() / "envoy.yaml.in").is_file()
    assert (envoy_dir() / "edge.lua").is_file()
    assert Path(envoy_binary()).exists()


@pytest.mark.parametrize(
    "upstreams",
    [
        [("127.0.0.1", 50051)],
        [("127.0.0.1", 50051), ("127.0.0.1", 50052), ("::1", 50053)],
        [("localhost", 50051), ("127.0.0.1", 50052)],  # a host name: resolved by DNS
    ],
)
def test_rendered_config_validates(tmp_path: Path, upstreams: list[tuple[str, int]]) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(render_config(settings(upstreams=upstreams)))
    validate_config(path)


@pytest.mark.unit
def test_rendered_config_names_every_service_and_setting() -> None:
    text = render_config(settings())
    for service in TRANSCODED_SERVICES:
        assert f'"{service}"' in text
    for needle in (
        '"convert_grpc_status": true',
        '"reject_unknown_method": true',
        '"reject_unknown_query_parameters": true',
        '"reject_binding_body_field_collisions": true',
        '"always_print_primitive_fields": true',
        '"max_response_body_size": 16777216',  # lists past the listener's 1 MiB
        '"preserve_proto_field_names": true',  # family B override
        '"stream_sse_style_delimited": true',  # SSE override
        "enable_trailers: true",
        "codec_type: AUTO",
    ):
        assert needle in text


def test_validate_config_reports_envoys_complaint(tmp_path: Path) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(render_config(settings(services=["switchboard.nope.v1.NopeService"])))
    with pytest.raises(EnvoyError, match=r"switchboard\.nope\.v1\.NopeService"):
        validate_config(path)


@pytest.mark.unit
def test_render_needs_an_upstream() -> None:
    with pytest.raises(ValueError, match="upstream"):
        render_config(settings(upstreams=[]))


@pytest.mark.unit
def test_envoy_dir_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_ENVOY_DIR", str(tmp_path))
    assert envoy_dir() == tmp_path
