"""`smolgen check`: it passes a well-behaved endpoint (a fake and our own server, in both API
shapes) and catches each way the fake can misbehave."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fake_endpoint import FakeEndpoint
from smolgen.check import CHECKS, Endpoint, Settings, run_checks


def check(url: str, *, anthropic: bool = False, skip: tuple[str, ...] = ()) -> dict[str, bool]:
    settings = Settings(requests=3, burst=4)
    report = run_checks(Endpoint(url, anthropic=anthropic, timeout=30), settings, skip)
    return {o.name: o.passed for o in report.outcomes}


@pytest.fixture
def fake(request):
    endpoint = FakeEndpoint(*getattr(request, "param", ()))
    yield endpoint
    endpoint.close()


def test_a_well_behaved_endpoint_passes_every_check(fake):
    outcomes = check(fake.url)
    assert outcomes == dict.fromkeys(CHECKS, True)


@pytest.mark.parametrize(
    ("fault", "caught_by"),
    [
        ("bad_total", "chat"),
        ("no_usage", "chat"),
        ("no_done", "stream"),
        ("no_stream_usage", "stream"),
        ("cuts_utf8", "stream"),
        ("ignores_stop", "stop"),
        ("ignores_max_tokens", "max_tokens"),
        ("accepts_bad_request", "bad_request"),
        ("flat_error", "bad_request"),
        ("flat_error", "overflow"),
        ("truncates", "overflow"),
        ("no_retry_after", "throttle"),
        ("stays_overloaded", "throttle"),
    ],
)
def test_each_misbehaviour_is_caught(fault, caught_by):
    fake = FakeEndpoint(fault)
    try:
        # Only the check under test (and the chat that finds the model first): a misbehaviour
        # must fail its own check whatever ran before it.
        outcomes = check(fake.url, skip=tuple(c for c in CHECKS if c != caught_by))
    finally:
        fake.close()
    assert outcomes[caught_by] is False, outcomes


def test_the_url_may_name_v1_and_a_dead_endpoint_fails_cleanly(fake):
    assert check(f"{fake.url}/v1", skip=("throttle", "latency"))["chat"] is True
    fake.close()
    outcomes = check(fake.url)
    assert outcomes == {"model": False}


def test_the_command_prints_json_and_exits_8_on_a_failure():
    fake = FakeEndpoint("ignores_stop")
    try:
        args = [sys.executable, "-m", "smolgen", "check", fake.url, "--json", "--requests", "2"]
        args += ["--burst", "3"]
        run = subprocess.run(args, capture_output=True, text=True, timeout=120)
    finally:
        fake.close()
    assert run.returncode == 8, run.stderr
    report = json.loads(run.stdout)
    assert report["model"] == "fake-model" and report["ok"] is False
    failed = [c["name"] for c in report["checks"] if c["passed"] is False]
    assert failed == ["stop"]
    assert set(report["latency"]) >= {"ttft_p50_ms", "ttft_p95_ms", "tokens_per_s"}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["localhost:8000"], "not an http(s) URL"),
        (["http://127.0.0.1:1", "--burst", "1000"], "--burst must be from 1 to 256"),
        (["http://127.0.0.1:1", "--timeout", "inf"], "--timeout must be from 0 to 3600"),
        (["http://127.0.0.1:1", "--max-ttft-p95-ms", "nan"], "--max-ttft-p95-ms must be"),
        (["http://127.0.0.1:1", "--skip", "everything"], "invalid choice"),
    ],
)
def test_the_command_refuses_bad_arguments(args, says):
    run = subprocess.run(
        [sys.executable, "-m", "smolgen", "check", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and says in run.stderr, run.stderr


@pytest.mark.slow
@pytest.mark.parametrize("anthropic", [False, True], ids=["openai", "anthropic"])
def test_our_server_passes_every_check(smollm2_gguf, anthropic):
    pytest.importorskip("fastapi")
    from test_server import Server

    server = Server(smollm2_gguf, "--max-concurrent", "1", "--max-queue", "1", key=None)
    try:
        outcomes = check(server.url, anthropic=anthropic)
    finally:
        log = server.stop()
    assert outcomes == dict.fromkeys(CHECKS, True)
    assert "Traceback" not in log, log
