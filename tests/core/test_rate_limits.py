"""Request-rate limits per token and per org (decision 30): the buckets alone on a clock the test
moves, two limiters sharing buckets in a real database, and the refusal as clients see it: gRPC
RESOURCE_EXHAUSTED with a retry hint, and HTTP 429 with Retry-After through the real Envoy, in
each REST family's error shape. Several server processes on one PostgreSQL sharing a limit are
at the end (PostgreSQL only)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from switchboard.common.v1 import diagnostics_service_pb2 as diagnostics_pb
from switchboard.common.v1 import diagnostics_service_pb2_grpc

from switchboard.server.app.platform import descriptor_set_path
from switchboard.server.app.server import Application, build_application
from switchboard.server.core.auth import Role, TokenService
from switchboard.server.core.db import Database, create_engine
from switchboard.server.core.errors import TooManyRequests
from switchboard.server.core.ratelimit import DatabaseBuckets, RateLimit, RateLimiter
from switchboard.server.edge.envoy import EnvoyProcess, EnvoySettings
from switchboard.server.migrations.migrate import upgrade
from tests.support.auth import TEST_SECRET
from tests.support.clock import TEST_CLOCK
from tests.support.errors import error_details
from tests.support.server import free_port, make_settings


class SteppedClock:
    """The test's time, moved only by `advance`: rates are judged by it, not by how fast the
    machine runs the test."""

    def __init__(self, start: datetime) -> None:
        self.at = start

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


NO_LIMIT = RateLimit()


def _limiter(
    clock: SteppedClock,
    token: RateLimit,
    org: RateLimit = NO_LIMIT,
    store: DatabaseBuckets | None = None,
    lease_seconds: float = 0.05,
) -> RateLimiter:
    return RateLimiter(
        clock, per_token=token, per_org=org, store=store, lease_seconds=lease_seconds
    )


async def _try(limiter: RateLimiter, token: str, org: str) -> TooManyRequests | None:
    try:
        await limiter.admit(token, org)
    except TooManyRequests as refused:
        return refused
    return None


# ---------------------------------------------------------------------------------------------
# One process: exact buckets
# ---------------------------------------------------------------------------------------------


@pytest.mark.unit
async def test_a_token_under_its_limit_is_never_refused() -> None:
    clock = SteppedClock(TEST_CLOCK.now())
    limiter = _limiter(clock, RateLimit.per_second(10), RateLimit.per_second(20))
    for _ in range(600):  # a minute at 9.5 requests a second
        assert await _try(limiter, "token-a", "org-a") is None
        clock.advance(1 / 9.5)
    assert limiter.refused == 0


@pytest.mark.unit
async def test_beyond_the_burst_requests_wait_for_the_rate() -> None:
    clock = SteppedClock(TEST_CLOCK.now())
    limiter = _limiter(clock, RateLimit.per_second(2, burst=5))
    outcomes = [await _try(limiter, "t", "o") for _ in range(6)]
    assert outcomes[:5] == [None] * 5
    refused = outcomes[5]
    assert refused is not None
    assert refused.retry_after == pytest.approx(0.5)  # one token at 2 per second
    assert refused.retry_after_seconds == 1
    assert "this token" in refused.message and "2 requests per second (burst 5)" in refused.message
    clock.advance(0.5)
    assert await _try(limiter, "t", "o") is None
    assert await _try(limiter, "t", "o") is not None
    clock.advance(10)  # refilled to the burst, not beyond
    assert [await _try(limiter, "t", "o") is None for _ in range(6)] == [True] * 5 + [False]


@pytest.mark.unit
async def test_the_org_limit_covers_all_its_tokens_and_a_refusal_takes_nothing() -> None:
    clock = SteppedClock(TEST_CLOCK.now())
    limiter = _limiter(clock, RateLimit.per_second(0.01, 3), RateLimit.per_second(0.01, 5))
    first = [await _try(limiter, "token-1", "acme") for _ in range(10)]
    assert [r is None for r in first] == [True] * 3 + [False] * 7
    # token-1's seven refusals took nothing from acme's bucket: two are left for token-2.
    second = [await _try(limiter, "token-2", "acme") for _ in range(3)]
    assert [r is None for r in second] == [True, True, False]
    refused = second[2]
    assert refused is not None and "org 'acme'" in refused.message
    assert refused.retry_after == pytest.approx(100)


@pytest.mark.unit
async def test_one_tokens_excess_does_not_limit_another_orgs_token() -> None:
    clock = SteppedClock(TEST_CLOCK.now())
    limiter = _limiter(clock, RateLimit.per_second(5), RateLimit.per_second(8))
    for _ in range(100):
        await _try(limiter, "greedy", "org-greedy")
    assert limiter.refused == 95
    assert [await _try(limiter, "polite", "org-polite") for _ in range(5)] == [None] * 5


@pytest.mark.unit
async def test_zero_means_no_limit() -> None:
    limiter = _limiter(SteppedClock(TEST_CLOCK.now()), RateLimit.per_second(0))
    assert not limiter.enabled
    for _ in range(10_000):
        await limiter.admit("t", "o")


@pytest.mark.unit
async def test_idle_buckets_are_forgotten_once_full() -> None:
    clock = SteppedClock(TEST_CLOCK.now())
    limiter = _limiter(clock, RateLimit.per_second(1, burst=2))
    for _ in range(3):
        await _try(limiter, "t", "o")
    limiter.forget_idle(clock.now().timestamp())
    clock.advance(1)
    assert await _try(limiter, "t", "o") is None  # still remembered: only one token back
    assert await _try(limiter, "t", "o") is not None
    assert limiter.tracked == 1
    clock.advance(2)
    limiter.forget_idle(clock.now().timestamp())
    assert limiter.tracked == 0  # full again: forgetting it changes nothing


# ---------------------------------------------------------------------------------------------
# Several processes: leases from buckets in the database
# ---------------------------------------------------------------------------------------------


@pytest.fixture
async def databases(fresh_database_url: str) -> AsyncIterator[list[Database]]:
    """Two connections to one database, as two server processes would have."""
    dbs = [Database(create_engine(fresh_database_url)) for _ in range(2)]
    await upgrade(dbs[0].engine)
    yield dbs
    for db in dbs:
        await db.dispose()


async def test_limiters_sharing_a_database_share_one_limit(databases: list[Database]) -> None:
    clock = SteppedClock(TEST_CLOCK.now())
    rate, burst, seconds = 100.0, 10.0, 3.0
    limit = RateLimit.per_second(rate, burst)
    limiters = [
        _limiter(clock, limit, store=DatabaseBuckets(db), lease_seconds=0.05) for db in databases
    ]
    admitted = [0, 0]
    steps = int(seconds / 0.002)
    for step in range(steps):  # each "process" is offered 500 requests a second, 5x the limit
        # Requests reach the two in turn, each first every other step (as real arrivals would).
        for i in (0, 1) if step % 2 else (1, 0):
            if await _try(limiters[i], "shared-token", "org-shared") is None:
                admitted[i] += 1
        clock.advance(0.002)
    total = sum(admitted)
    # Everything admitted was taken from the shared bucket first (which started full, so no
    # process held anything before); a process may still hold up to 1.5 blocks it leased.
    assert total <= burst + rate * seconds, admitted
    assert total >= 0.9 * rate * seconds, admitted  # and the limit is not much stricter either
    assert min(admitted) >= 0.4 * total, admitted  # both processes got their share
    # Over the limit, each process asks the database about once per block's refill time
    # (lease_seconds), not once per request (1500 each).
    leases = [limiter.leases for limiter in limiters]
    assert max(leases) <= 1.25 * seconds / 0.05, leases
    refusals = sum(limiter.refused for limiter in limiters)
    assert refusals == 2 * steps - total


async def test_under_a_shared_limit_nothing_is_refused_and_one_write_serves_a_block(
    databases: list[Database],
) -> None:
    clock = SteppedClock(TEST_CLOCK.now())
    limit = RateLimit.per_second(100, burst=10)
    limiters = [
        _limiter(clock, limit, store=DatabaseBuckets(db), lease_seconds=0.05) for db in databases
    ]
    requests = 0
    for step in range(1500):  # 3 s; each process takes a request every 24 ms: 83/s in all
        if step % 12 in (0, 6):
            limiter = limiters[step % 12 // 6]
            assert await _try(limiter, "steady-token", "org-steady") is None, step
            requests += 1
        clock.advance(0.002)
    leases = sum(limiter.leases for limiter in limiters)
    # A block of 5 per statement, and the blocks the two still hold.
    assert leases <= requests / 5 + 4, (leases, requests)


async def test_a_shared_refusal_tells_when_the_next_block_can_be_there(
    databases: list[Database],
) -> None:
    clock = SteppedClock(TEST_CLOCK.now())
    limiter = _limiter(
        clock, RateLimit.per_second(10, burst=4), store=DatabaseBuckets(databases[0])
    )
    assert [await _try(limiter, "t", "o") for _ in range(4)] == [None] * 4
    refused = await _try(limiter, "t", "o")
    assert refused is not None
    assert refused.retry_after == pytest.approx(0.1)  # a block is 1 token (0.05 s of 10/s)
    leases = limiter.leases
    for _ in range(50):  # refused locally until then: the database is not asked again
        assert await _try(limiter, "t", "o") is not None
    assert limiter.leases == leases
    clock.advance(0.11)
    assert await _try(limiter, "t", "o") is None
    # Another "process" sees the same bucket: empty.
    other = _limiter(clock, RateLimit.per_second(10, burst=4), store=DatabaseBuckets(databases[1]))
    assert await _try(other, "t", "o") is not None


async def test_full_buckets_are_swept_from_the_database(databases: list[Database]) -> None:
    store = DatabaseBuckets(databases[0])
    limit = RateLimit.per_second(10, burst=20)
    t0 = TEST_CLOCK.now().timestamp()
    assert await store.lease("a", limit, 1, t0) == (1, 19)  # full again at t0 + 0.1 s
    assert await store.lease("b", limit, 5, t0 + 1) == (5, 15)  # full again at t0 + 1.5 s
    assert await store.sweep(t0 + 1.0) == 1
    assert await store.lease("a", limit, 20, t0 + 1.0) == (20, 0)  # swept = full
    assert await store.sweep(t0 + 1.4) == 0
    assert await store.sweep(t0 + 1.5) == 1


@pytest.mark.unit
async def test_without_its_database_a_process_limits_on_its_own(tmp_path: Path) -> None:
    """A database that fails (here: one without the table) must not refuse everything."""
    db = Database(create_engine(f"sqlite+aiosqlite:///{tmp_path}/empty.db"))
    clock = SteppedClock(TEST_CLOCK.now())
    limiter = _limiter(clock, RateLimit.per_second(5, burst=5), store=DatabaseBuckets(db))
    try:
        outcomes = [await _try(limiter, "t", "o") is None for _ in range(8)]
    finally:
        await db.dispose()
    assert outcomes == [True] * 5 + [False] * 3  # one second's worth, per process
    assert limiter.leases == 1  # asked once; again only after a second


# ---------------------------------------------------------------------------------------------
# What clients see: a server with tiny limits (no refill within a test), and an Envoy in front
# ---------------------------------------------------------------------------------------------

TOKEN_BURST, ORG_BURST, RATE = 3, 5, 0.001  # one token back every 1000 s


@pytest.fixture(scope="module")
async def limited(
    app: Application, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Application]:
    """Its own server (after the session's, which resets a shared PostgreSQL schema)."""
    settings = make_settings(
        tmp_path_factory.mktemp("limited"),
        rate_limit_per_token=RATE,
        rate_limit_per_token_burst=TOKEN_BURST,
        rate_limit_per_org=RATE,
        rate_limit_per_org_burst=ORG_BURST,
    )
    server = build_application(settings)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
async def limited_http(
    limited: Application, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    work = tmp_path_factory.mktemp("limited-envoy")
    settings = EnvoySettings(
        listen_port=free_port(),
        admin_port=free_port(),
        upstreams=[("127.0.0.1", limited.port)],
        descriptor_path=descriptor_set_path(),
        listen_host="127.0.0.1",
        access_log_path=str(work / "access.log"),
    )
    async with (
        EnvoyProcess(settings, work) as envoy,
        httpx.AsyncClient(base_url=envoy.base_url, timeout=10) as client,
    ):
        yield client


def _token(org: str) -> str:
    return TokenService(TEST_SECRET, TEST_CLOCK).issue(
        org=org, roles=[Role.CLIENT], subject=f"app-{uuid.uuid4().hex[:6]}"
    )


def _org() -> str:
    return f"org-{uuid.uuid4().hex[:12]}"


def _retry_after(response: httpx.Response) -> int:
    value = int(response.headers["retry-after"])
    assert 990 <= value <= 1000, value  # (1 - what refilled since) / 0.001 per second
    return value


async def test_grpc_refusal_is_resource_exhausted_with_a_retry_hint(limited: Application) -> None:
    auth = [("authorization", f"Bearer {_token(_org())}")]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{limited.port}") as channel:
        stub = diagnostics_service_pb2_grpc.DiagnosticsServiceStub(channel)
        for _ in range(TOKEN_BURST):
            await stub.Ping(diagnostics_pb.PingRequest(), metadata=auth)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Ping(diagnostics_pb.PingRequest(), metadata=auth)
    error = refused.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    reason, metadata, _ = error_details(error)
    assert (reason, metadata["http_status"]) == ("429", "429")
    status = rpc_status.from_call(error)
    assert status is not None
    retry = error_details_pb2.RetryInfo()
    assert [d.Unpack(retry) for d in status.details if d.Is(retry.DESCRIPTOR)] == [True]
    delay = retry.retry_delay.ToTimedelta().total_seconds()
    assert 989 < delay <= 1000
    trailing = dict(error.trailing_metadata() or ())
    assert trailing["retry-after"] == str(max(1, -int(-delay // 1)))


async def test_rest_family_b_429_with_retry_after(limited_http: httpx.AsyncClient) -> None:
    headers = {"Authorization": f"Bearer {_token(_org())}"}
    for _ in range(TOKEN_BURST):
        assert (await limited_http.get("/diagnostics/ping", headers=headers)).status_code == 200
    response = await limited_http.get("/diagnostics/ping", headers=headers)
    assert response.status_code == 429
    _retry_after(response)
    body = response.json()
    assert list(body) == ["error_code", "error_description"]
    assert body["error_code"] == "429"
    assert "too many requests for this token" in body["error_description"]


async def test_rest_family_c_429_in_servicestack_shape(limited_http: httpx.AsyncClient) -> None:
    headers = {"Authorization": f"Bearer {_token(_org())}"}
    send = {"Messages": [{"channel": "smpp", "to": "+27821234567", "content": "hi"}]}
    for _ in range(TOKEN_BURST):
        ok = await limited_http.post("/communication/message/sms", json=send, headers=headers)
        assert ok.status_code == 200, ok.text
    response = await limited_http.post("/communication/message/sms", json=send, headers=headers)
    assert response.status_code == 429
    _retry_after(response)
    status = response.json()["ResponseStatus"]
    assert status["ErrorCode"] == "TooManyRequests"
    assert "too many requests for this token" in status["Message"]
    assert status["Errors"] == []


async def test_rest_family_a_429_in_errors_shape(limited_http: httpx.AsyncClient) -> None:
    org = _org()
    headers = {"Authorization": f"Bearer {_token(org)}"}
    # The org's burst (5) outlasts the token's (3): a second token of the same org gets the
    # org's two remaining requests, then the org's refusal.
    for _ in range(TOKEN_BURST):
        assert (await limited_http.get("/v2/types", headers=headers)).status_code == 200
    refused = await limited_http.get("/v2/types", headers=headers)
    assert refused.status_code == 429
    _retry_after(refused)
    [error] = refused.json()["errors"]
    assert error["code"] == "429" and error["httpStatusCode"] == 429
    assert error["title"] == "Too Many Requests"
    assert "this token" in error["details"]
    assert error["ref"] == refused.headers["x-request-id"]
    second = {"Authorization": f"Bearer {_token(org)}"}
    for _ in range(ORG_BURST - TOKEN_BURST):
        assert (await limited_http.get("/v2/types", headers=second)).status_code == 200
    by_org = await limited_http.get("/v2/types", headers=second)
    assert by_org.status_code == 429
    _retry_after(by_org)
    assert f"org '{org}'" in by_org.json()["errors"][0]["details"]


async def test_rest_another_orgs_token_is_unaffected(limited_http: httpx.AsyncClient) -> None:
    greedy = {"Authorization": f"Bearer {_token(_org())}"}
    codes = [(await limited_http.get("/diagnostics/ping", headers=greedy)).status_code]
    for _ in range(9):
        codes.append((await limited_http.get("/diagnostics/ping", headers=greedy)).status_code)
    assert codes == [200] * TOKEN_BURST + [429] * (10 - TOKEN_BURST)
    polite = {"Authorization": f"Bearer {_token(_org())}"}
    for _ in range(TOKEN_BURST):  # its whole allowance, never refused
        assert (await limited_http.get("/diagnostics/ping", headers=polite)).status_code == 200


async def test_public_routes_are_not_limited(limited: Application) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{limited.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(TOKEN_BURST * 4):
            await health.Check(health_pb2.HealthCheckRequest())


# ---------------------------------------------------------------------------------------------
# Two server processes on one PostgreSQL
# ---------------------------------------------------------------------------------------------

SHARED_RATE, SHARED_BURST, FLOOD_SECONDS, CLIENTS_PER_SERVER = 200.0, 20.0, 3.0, 16


async def _serve(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as stderr:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "switchboard.server.cli", "serve", env=env, stderr=stderr
        )


async def _flood(port: int, auth: list[tuple[str, str]], until: datetime) -> tuple[int, int]:
    """Pings as fast as CLIENTS_PER_SERVER callers can until `until`: (accepted, refused)."""
    counts = [0, 0]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = diagnostics_service_pb2_grpc.DiagnosticsServiceStub(channel)

        async def caller() -> None:
            while TEST_CLOCK.now() < until:
                call = stub.Ping(diagnostics_pb.PingRequest(), metadata=auth, timeout=10)
                code = await call.code()
                assert code in (grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED), code
                counts[code != grpc.StatusCode.OK] += 1

        await asyncio.gather(*(caller() for _ in range(CLIENTS_PER_SERVER)))
    return counts[0], counts[1]


@pytest.mark.skipif(
    not os.environ.get("SWITCHBOARD_TEST_DATABASE_URL", "").startswith("postgres"),
    reason="replicas run on PostgreSQL; on SQLite one process's buckets are exact",
)
async def test_two_server_processes_on_postgresql_share_one_limit(
    tmp_path: Path, fresh_database_url: str
) -> None:
    ports = [free_port(), free_port()]
    base = {
        **os.environ,
        "SWITCHBOARD_DATABASE_URL": fresh_database_url,
        "SWITCHBOARD_VAR_DIR": str(tmp_path),
        "SWITCHBOARD_JWT_SECRET": TEST_SECRET,
        "SWITCHBOARD_RATE_LIMIT_PER_TOKEN": str(SHARED_RATE),
        "SWITCHBOARD_RATE_LIMIT_PER_TOKEN_BURST": str(SHARED_BURST),
        "SWITCHBOARD_DRAIN_SECONDS": "1",
    }
    logs = [tmp_path / f"server-{i}.log" for i in range(2)]
    servers = []
    for port, log in zip(ports, logs, strict=True):
        servers.append(await _serve({**base, "SWITCHBOARD_GRPC_PORT": str(port)}, log))
    auth = [("authorization", f"Bearer {_token('org-replicas')}")]
    try:
        for port in ports:  # both serve (health is public: it spends nothing)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=30
                )
        started = TEST_CLOCK.now()
        until = started + timedelta(seconds=FLOOD_SECONDS)
        results = await asyncio.gather(*(_flood(port, auth, until) for port in ports))
        elapsed = (TEST_CLOCK.now() - started).total_seconds()
    finally:
        for server in servers:
            if server.returncode is None:
                server.send_signal(signal.SIGTERM)
        for server in servers:
            await asyncio.wait_for(server.wait(), 30)
    accepted = [a for a, _ in results]
    refused = sum(r for _, r in results)
    total = sum(accepted)
    ceiling = SHARED_BURST + SHARED_RATE * elapsed
    leases = 0
    for log in logs:
        for line in log.read_text().splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("msg") == "rate limits: stopped":
                assert entry["shared"] is True
                leases += entry["leases"]
    print(
        f"\nrate limit {SHARED_RATE:g}/s burst {SHARED_BURST:g}, 2 processes, {elapsed:.2f} s: "
        f"accepted {accepted} = {total} of {total + refused} requests "
        f"({total / ceiling:.3f} of burst + rate x time = {ceiling:.0f}), {leases} leases"
    )
    # The bucket started full and nobody held a lease before: no tolerance needed.
    assert total <= ceiling, (accepted, ceiling)
    assert total >= 0.85 * SHARED_RATE * elapsed, (accepted, ceiling)
    assert min(accepted) >= 0.3 * total, accepted  # both processes took part
    assert refused > total  # the flood was well over the limit
    # Over the limit, each process asks the database about once per lease_seconds (0.02 s by
    # default), not once per request.
    assert 0 < leases <= 1.25 * 2 * elapsed / 0.02, (leases, total + refused)


async def test_rest_stream_refused_before_it_opens(limited_http: httpx.AsyncClient) -> None:
    """A server-streaming RPC counts when it opens; over the limit it never opens (SSE route)."""
    headers = {"Authorization": f"Bearer {_token(_org())}"}
    for _ in range(TOKEN_BURST):
        assert (await limited_http.get("/diagnostics/ping", headers=headers)).status_code == 200
    response = await limited_http.get("/communication/message/sms/events", headers=headers)
    assert response.status_code == 429
    _retry_after(response)
    assert response.json()["ResponseStatus"]["ErrorCode"] == "TooManyRequests"
