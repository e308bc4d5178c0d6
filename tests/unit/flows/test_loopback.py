"""The one-shot loopback server: binds 127.0.0.1, serves until one final reply, refuses strangers, logs nothing."""

from __future__ import annotations

import socket
import threading

import httpx
import pytest

from authsome.errors import AuthenticationFailed, UsageError
from authsome.flows.loopback import OneShotServer, Reply, Request, tokens_equal


def _echo_handler(expected: str) -> tuple[list[Request], object]:
    seen: list[Request] = []

    def handle(request: Request) -> Reply[str]:
        seen.append(request)
        if not tokens_equal(request.query.get("state"), expected):
            return Reply(400, "wrong state")
        if "error" in request.query:
            return Reply(200, "denied", error=AuthenticationFailed("denied"))
        return Reply(200, "ok", result=request.query["code"])

    return seen, handle


def test_binds_loopback_only_on_a_random_port() -> None:
    _, handle = _echo_handler("s")
    with OneShotServer(handle) as server:  # type: ignore[arg-type]
        assert server.port > 0
        assert server.url("/x").startswith(f"http://127.0.0.1:{server.port}/")
        assert server._httpd is not None and server._httpd.server_address[0] == "127.0.0.1"


def test_one_valid_request_consumes_the_shot_and_later_ones_are_gone() -> None:
    _, handle = _echo_handler("good")
    with OneShotServer(handle) as server:  # type: ignore[arg-type]
        first = httpx.get(server.url("/callback"), params={"state": "good", "code": "c1"})
        second = httpx.get(server.url("/callback"), params={"state": "good", "code": "c2"})
        assert first.status_code == 200 and first.text == "ok"
        assert second.status_code == 410
        assert server.wait(1) == "c1"
        port = server.port
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/callback", timeout=2)


def test_wrong_state_is_refused_without_consuming_the_shot() -> None:
    _, handle = _echo_handler("good")
    with OneShotServer(handle) as server:  # type: ignore[arg-type]
        bad = httpx.get(server.url("/callback"), params={"state": "evil", "code": "attacker"})
        assert bad.status_code == 400
        assert not server.done
        good = httpx.get(server.url("/callback"), params={"state": "good", "code": "real"})
        assert good.status_code == 200
        assert server.wait(1) == "real"


def test_foreign_host_header_is_refused_before_the_handler() -> None:
    seen, handle = _echo_handler("good")
    with OneShotServer(handle) as server:  # type: ignore[arg-type]
        r = httpx.get(server.url("/callback"), params={"state": "good", "code": "c"}, headers={"Host": "evil.test"})
        assert r.status_code == 421
        assert seen == [] and not server.done


def test_error_reply_is_raised_by_wait() -> None:
    _, handle = _echo_handler("good")
    with OneShotServer(handle) as server:  # type: ignore[arg-type]
        httpx.get(server.url("/callback"), params={"state": "good", "error": "access_denied"})
        with pytest.raises(AuthenticationFailed, match="denied"):
            server.wait(1)


def test_wait_times_out() -> None:
    _, handle = _echo_handler("good")
    with OneShotServer(handle) as server, pytest.raises(TimeoutError):  # type: ignore[arg-type]
        server.wait(0.3)


def test_pages_carry_no_store_and_strict_csp() -> None:
    _, handle = _echo_handler("good")
    with OneShotServer(handle) as server:  # type: ignore[arg-type]
        r = httpx.get(server.url("/"))
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert "default-src 'none'" in r.headers["content-security-policy"]


def test_request_lines_are_never_logged(capfd: pytest.CaptureFixture[str]) -> None:
    _, handle = _echo_handler("good")
    with OneShotServer(handle) as server:  # type: ignore[arg-type]
        httpx.get(server.url("/callback"), params={"state": "good", "code": "SECRET-CODE-123"})
        server.wait(1)
    out, err = capfd.readouterr()
    assert "SECRET-CODE-123" not in out + err
    assert "GET /callback" not in err


def test_handler_crash_is_a_500_without_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    def boom(request: Request) -> Reply[str]:
        raise RuntimeError("code=SECRET-IN-TRACEBACK")

    with OneShotServer(boom) as server:
        assert httpx.get(server.url("/")).status_code == 500
        assert not server.done
    assert "SECRET-IN-TRACEBACK" not in capfd.readouterr().err


def test_fixed_port_in_use_is_a_usage_error_naming_the_fix() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        _, handle = _echo_handler("s")
        with pytest.raises(UsageError, match=f"port {port}") as info:
            OneShotServer(handle, port=port).start()  # type: ignore[arg-type]
        assert info.value.hint and "--redirect-port" in info.value.hint


def test_offer_goes_through_the_same_checks() -> None:
    _, handle = _echo_handler("good")
    with OneShotServer(handle) as server:  # type: ignore[arg-type]
        assert server.offer(Request("GET", "/callback", {"state": "nope", "code": "x"})).status == 400
        assert server.offer(Request("GET", "/callback", {"state": "good", "code": "pasted"})).final
        assert server.wait(1) == "pasted"


def test_request_repr_hides_query_and_form() -> None:
    r = Request("POST", "/t/", {"code": "SECRET"}, {}, {"api_key": "SECRET"})
    assert "SECRET" not in repr(r)


def test_concurrent_final_requests_yield_exactly_one_result() -> None:
    _, handle = _echo_handler("good")
    with OneShotServer(handle) as server:  # type: ignore[arg-type]
        codes: list[int] = []

        def hit(i: int) -> None:
            codes.append(httpx.get(server.url("/cb"), params={"state": "good", "code": f"c{i}"}).status_code)

        threads = [threading.Thread(target=hit, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(codes).count(200) == 1 and codes.count(410) == 7
        assert server.wait(1).startswith("c")
