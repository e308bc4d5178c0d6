"""What authsome takes from mitmproxy beyond its addon API (authsome.proxy.mitm_internals) is still there, in the
installed mitmproxy, and still does what authsome counts on. CI runs this on both mitmproxy lines (11.x and 12.x):
a release that renames or drops one of these fails here, by name, rather than somewhere in an end-to-end run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from authsome.proxy import ca, tls

# In fresh interpreters: what mitmproxy has before authsome patches anything, and what the patches change.
BEFORE = """
import json
from mitmproxy import certs, http
from mitmproxy.proxy.layers.http import _upstream_proxy
from mitmproxy.proxy import mode_servers
from mitmproxy.proxy.layers.http import HttpStream
from mitmproxy.utils import asyncio_utils
print(json.dumps({
    "task_debug_info": "set_task_debug_info" in asyncio_utils.create_task.__code__.co_names,
    "post_init": "__post_init__" in vars(http.MessageData),
    "event_checks": hasattr(HttpStream.state_wait_for_request_headers, "__wrapped__"),
    "handshake_error": callable(getattr(_upstream_proxy.HttpUpstreamProxy, "on_handshake_error", None)),
    "key_loader": callable(getattr(certs, "load_pem_private_key", None)),
    "handle_stream": callable(getattr(mode_servers.ServerInstance, "handle_stream", None)),
}))
"""
AFTER = """
import json, sys
from authsome.proxy import mitm_internals, tls
mitm_internals.load_mitmproxy()
mitm_internals.import_mitmproxy()
from mitmproxy import certs, http
from mitmproxy.proxy.layers.http import HttpStream, _upstream_proxy
from mitmproxy.utils import asyncio_utils
print(json.dumps({
    "task_debug_info": asyncio_utils.set_task_debug_info is mitm_internals._set_task_debug_info,
    "event_checks": hasattr(HttpStream.state_wait_for_request_headers, "__wrapped__"),
    "post_init": "__post_init__" in vars(http.MessageData) and http.MessageData.__post_init__.__name__ != "_no_check",
    "handshake_error": getattr(_upstream_proxy.HttpUpstreamProxy, "_authsome_keeps_errors", False),
    "key_loader": certs.load_pem_private_key is tls.load_private_key,
    "addons_init_ran": "mitmproxy.addons.onboarding" in sys.modules or "mitmproxy.addons.core" in sys.modules,
    "deferred_ran": [m for m in ("pyparsing.core", "service_identity.cryptography") if m in sys.modules],
}))
"""


# Header look-ups and context forks before and after the patches, in one interpreter: the same results.
SAME_RESULTS = """
import json
from mitmproxy import http, options
from mitmproxy.proxy import context
from mitmproxy.test import tflow
headers = http.Headers([(b"Content-Type", b"text/plain"), (b"X-Dup", b"1"), (b"x-dup", b"2"), (b"X-Bin", b"\\xff")])
def look():
    out = []
    for name in ("content-type", "CONTENT-TYPE", b"x-dup", "X-Dup", "x-bin", b"X-BIN", "missing", b"missing", None, 3):
        for ask in (lambda: headers.get(name), lambda: headers.get(name, "d"), lambda: name in headers,
                    lambda: headers.get_all(name), lambda: headers[name]):
            try:
                out.append(repr(ask()))
            except Exception as exc:
                out.append(type(exc).__name__)
    return out
ctx = context.Context(tflow.tclient_conn(), options.Options())
ctx.layers.append("layer")
def fork():
    forked = ctx.fork()
    return sorted(vars(forked)), forked.server is ctx.server, forked.layers == ctx.layers, forked.layers is ctx.layers
before = (look(), fork())
from authsome.proxy import mitm_internals
mitm_internals.load_mitmproxy()
after = (look(), fork())
print(json.dumps({
    "same": before == after,
    "patched": [vars(http.Headers).get("_authsome_one_pass", 0), vars(context.Context).get("_authsome_fork", 0)],
    "fork": after[1],
}))
"""


def _probe(code: str) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def test_every_internal_authsome_relies_on_is_there() -> None:
    assert _probe(BEFORE) == {
        "task_debug_info": True,  # create_task reads set_task_debug_info from its module on each call
        "post_init": True,
        "event_checks": True,  # proxy.utils.expect wraps each state handler
        "handshake_error": True,
        "key_loader": True,
        "handle_stream": True,
    }


def test_each_patch_takes_and_what_a_run_never_uses_stays_unloaded() -> None:
    assert _probe(AFTER) == {
        "task_debug_info": True,  # tasks are named without an environment look-up
        "post_init": False,  # the per-message type checks are off
        "event_checks": False,  # and so are the per-event ones
        "handshake_error": True,
        "key_loader": True,
        "addons_init_ran": False,  # mitmproxy.addons' __init__ (every addon) never ran
        "deferred_ran": [],
    }


def test_the_ca_key_loads_through_mitmproxy_with_the_fast_loader(tmp_path: Path) -> None:
    from mitmproxy import certs

    from authsome.proxy import mitm_internals

    ca.ensure_ca(tmp_path)
    mitm_internals.load_ca_key_without_rsa_recheck()
    assert certs.load_pem_private_key is tls.load_private_key
    store = certs.CertStore.from_store(str(tmp_path), "mitmproxy", 2048)
    entry = store.get_cert("api.openai.com", [])
    assert entry.cert.cn == "api.openai.com"


def test_header_look_ups_and_context_forks_give_the_same_results_once_made_cheaper() -> None:
    assert _probe(SAME_RESULTS) == {
        "same": True,
        "patched": [True, True],
        "fork": [["client", "layers", "options", "server"], True, True, False],
    }
