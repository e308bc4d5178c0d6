"""The credential-injecting proxy behind ``authsome run``.

Pure modules (no mitmproxy): ``routing`` (which provider a request belongs to), ``environment`` (what the child
sees), ``ca`` (the interception CA and CA bundles, ``ca_status`` for ``doctor``), ``report`` (verbose lines, audit
records), ``relay`` (the front door: relays unrouted tunnels, hands the rest to mitmproxy) and ``runner`` (the ``run``
command). mitmproxy glue, imported only once a run starts: ``server`` (mitmproxy in a background thread), ``auth``
(407 without the per-run credential), ``tunnel`` (what is decrypted, upstream SNI), ``addon`` (routing, destination
checks and injection) and ``onboarding`` (the ``mitm.it`` page).
"""
