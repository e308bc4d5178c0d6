"""The hook dispatcher behaves as mitmproxy's own addon manager: order, async hooks, errors, halts, chain changes."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from mitmproxy import exceptions, hooks, options
from mitmproxy.master import Master

from authsome.proxy.mitm_internals import install_hook_dispatch

from .conftest import run_async


class Recorder:
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name = name
        self.calls = calls

    def running(self) -> None:
        self.calls.append(self.name)


class AsyncRecorder(Recorder):
    async def running(self) -> None:  # type: ignore[override]
        self.calls.append(self.name)


class Broken:
    name = "broken"

    def running(self) -> None:
        raise ValueError("addon bug")


class Halting:
    name = "halting"

    def running(self) -> None:
        raise exceptions.AddonHalt()


class Silent:
    name = "silent"  # implements no hook at all


async def _main_with(addons: tuple[object, ...], calls: list[str]) -> list[str]:
    master = Master(options.Options())
    dispatch = install_hook_dispatch(master)
    assert master.addons is dispatch
    dispatch.add(*addons)
    await dispatch.trigger_event(hooks.RunningHook())
    return calls


def test_hooks_run_in_chain_order_sync_and_async() -> None:
    calls: list[str] = []
    run_async(_main_with((Recorder("a", calls), Silent(), AsyncRecorder("b", calls), Recorder("c", calls)), calls))
    assert calls == ["a", "b", "c"]


@pytest.mark.addon_error_expected
def test_an_addon_error_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    with caplog.at_level(logging.ERROR):
        run_async(_main_with((Recorder("a", calls), Broken(), Recorder("b", calls)), calls))
    assert calls == ["a", "b"]
    assert "Addon error: addon bug" in caplog.text


def test_addon_halt_stops_the_chain() -> None:
    calls: list[str] = []
    run_async(_main_with((Recorder("a", calls), Halting(), Recorder("b", calls)), calls))
    assert calls == ["a"]


def test_adding_and_removing_addons_is_seen_by_the_next_event() -> None:
    calls: list[str] = []

    async def main() -> None:
        master = Master(options.Options())
        dispatch = install_hook_dispatch(master)
        first = Recorder("a", calls)
        dispatch.add(first)
        await dispatch.trigger_event(hooks.RunningHook())
        dispatch.add(Recorder("b", calls))
        await dispatch.trigger_event(hooks.RunningHook())
        dispatch.remove(first)
        await dispatch.trigger_event(hooks.RunningHook())

    run_async(main())
    assert calls == ["a", "a", "b", "b"]


class FlowWatcher:
    """Records each request hook and each ``update`` that follows it."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def request(self, flow: object) -> None:
        self.calls.append("request")

    def update(self, flows: list[object]) -> None:
        self.calls.append(f"update({len(flows)})")


class RequestOnly:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def request(self, flow: object) -> None:
        self.calls.append("request")


def test_a_flow_event_is_followed_by_update_for_an_addon_that_has_that_hook() -> None:
    from mitmproxy.http import HTTPFlow
    from mitmproxy.proxy.layers.http import HttpRequestHook
    from mitmproxy.test import tflow

    calls: list[str] = []

    async def main(addon: object) -> None:
        master = Master(options.Options())
        dispatch = install_hook_dispatch(master)
        dispatch.add(addon)
        flow: HTTPFlow = tflow.tflow()
        await dispatch.handle_lifecycle(HttpRequestHook(flow))
        dispatch.add(FlowWatcher(calls))  # a chain change is seen by the next event
        await dispatch.handle_lifecycle(HttpRequestHook(flow))

    run_async(main(RequestOnly(calls)))
    assert calls == ["request", "request", "request", "update(1)"]


class Intercepting:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def request(self, flow: Any) -> None:
        self.calls.append("intercept")
        flow.intercept()


class SecondRequest(RequestOnly):
    def request(self, flow: object) -> None:
        self.calls.append("second request")


class BrokenRequest:
    def request(self, flow: object) -> None:
        raise ValueError("addon bug in place")


def _in_place(addons: tuple[object, ...]) -> tuple[bool, Any, Any]:
    """run_in_place on a request hook, then what mitmproxy's hook task would do (handle_lifecycle)."""
    from mitmproxy.proxy.layers.http import HttpRequestHook
    from mitmproxy.test import tflow

    async def main() -> tuple[bool, Any, Any]:
        dispatch = install_hook_dispatch(Master(options.Options()))
        dispatch.add(*addons)
        flow = tflow.tflow()
        hook = HttpRequestHook(flow)
        done = dispatch.run_in_place(hook)
        if not done:
            await dispatch.handle_lifecycle(hook)
        return done, flow, dispatch

    return run_async(main())


def test_in_place_a_chain_of_plain_hooks_is_done_at_once() -> None:
    calls: list[str] = []
    done, _, _ = _in_place((RequestOnly(calls), Recorder("running", calls), SecondRequest(calls)))
    assert (done, calls) == (True, ["request", "second request"])


def test_in_place_an_update_hook_in_the_chain_leaves_the_event_to_its_task() -> None:
    calls: list[str] = []
    done, _, _ = _in_place((RequestOnly(calls), FlowWatcher(calls)))
    assert (done, calls) == (False, ["request", "request", "update(1)"])  # each once, in mitmproxy's order


def test_in_place_an_intercepted_flow_waits_in_its_task_without_running_the_hooks_again() -> None:
    calls: list[str] = []
    done, flow, _ = _in_place((Intercepting(calls), RequestOnly(calls)))
    assert (done, calls, flow.intercepted) == (False, ["intercept", "request"], True)


@pytest.mark.addon_error_expected
def test_in_place_an_addon_error_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    with caplog.at_level(logging.ERROR):
        done, _, _ = _in_place((BrokenRequest(), RequestOnly(calls)))
    assert (done, calls) == (True, ["request"])
    assert "Addon error: addon bug in place" in caplog.text
