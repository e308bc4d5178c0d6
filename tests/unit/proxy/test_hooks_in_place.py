"""A request's hooks run where mitmproxy's HTTP layer asks for them (authsome.proxy.mitm_internals), through a real
proxy: in chain order, once each, with an addon that must wait still waited for before the request goes on."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import certifi
import pytest
import requests

from authsome.proxy.relay import FrontDoor
from authsome.proxy.routing import Router
from authsome.proxy.server import ProxyServer, ServerOptions

CREDENTIAL = b"authsome:test-token"
REQUEST_HOOKS = ("requestheaders", "request", "responseheaders", "response")


def _task() -> str:
    task = asyncio.current_task()
    return task.get_name() if task is not None else "none"


class Recorder:
    """Notes each request hook with the name of the task it ran in."""

    def __init__(self, name: str, calls: list[tuple[str, str, str]]) -> None:
        self.name, self.calls = name, calls
        for hook in REQUEST_HOOKS:
            setattr(self, hook, lambda flow, hook=hook: self.calls.append((self.name, hook, _task())))


class SlowRequest:
    """An addon whose ``request`` hook must wait; it marks the request so the upstream can tell it waited."""

    def __init__(self, calls: list[tuple[str, str, str]]) -> None:
        self.calls = calls

    async def request(self, flow: object) -> None:
        self.calls.append(("slow", "request", "start"))
        await asyncio.sleep(0.05)
        self.calls.append(("slow", "request", "end"))
        flow.request.headers["x-waited"] = "yes"  # type: ignore[attr-defined]


class _Upstream(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"waited={self.headers.get('x-waited', 'no')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _through_proxy(addons: list[object], confdir: Path, url: str, count: int) -> list[str]:
    server = ProxyServer(ServerOptions(confdir, Path(certifi.where())), addons, FrontDoor(Router([]), CREDENTIAL))
    port = server.start()
    try:
        proxy = f"http://{CREDENTIAL.decode()}@127.0.0.1:{port}"
        with requests.Session() as session:  # one keep-alive connection
            session.trust_env = False
            return [session.get(url, proxies={"http": proxy}, timeout=10).text for _ in range(count)]
    finally:
        server.stop()


def test_a_requests_hooks_run_in_place_in_order_once_each(tmp_path: Path, upstream: str) -> None:
    calls: list[tuple[str, str, str]] = []
    bodies = _through_proxy([Recorder("a", calls), Recorder("b", calls)], tmp_path, upstream, 2)
    assert bodies == ["waited=no"] * 2
    assert [(name, hook) for name, hook, _ in calls] == [(n, h) for h in REQUEST_HOOKS for n in "ab"] * 2
    # none was handed to a task of its own (mitmproxy names those "handle_hook(<hook>)"; in place, a hook runs in
    # whatever task brought the layer its event: the connection's, or that of the previous hook that had to wait)
    assert [hook for _, hook, task in calls if task == f"handle_hook({hook})"] == []


def test_a_hook_that_must_wait_is_waited_for_and_the_rest_of_the_chain_runs_after_it(
    tmp_path: Path, upstream: str
) -> None:
    calls: list[tuple[str, str, str]] = []
    bodies = _through_proxy([Recorder("a", calls), SlowRequest(calls), Recorder("b", calls)], tmp_path, upstream, 1)
    assert bodies == ["waited=yes"]  # the request went upstream only once the slow hook was done
    request_hook = [(name, what) for name, hook, what in calls if hook == "request"]
    assert [name for name, _ in request_hook] == ["a", "slow", "slow", "b"]
    tasks = {(name, hook): task for name, hook, task in calls if name != "slow"}
    assert tasks[("a", "request")] != "handle_hook(request)"  # in place, up to the hook that waits
    assert tasks[("b", "request")] == "handle_hook(request)"  # the rest in the hook's task, as mitmproxy would
    assert tasks[("b", "response")] != "handle_hook(response)"  # and the next hooks in place again
