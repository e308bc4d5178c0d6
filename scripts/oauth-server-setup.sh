#!/usr/bin/env bash
# Install the real OAuth/OpenID server the end-to-end tests run (panva/oidc-provider, pinned in
# tests/oauth_server/package-lock.json). Idempotent: does nothing when node_modules already matches the lock file.
# Needs Node >= 20.19 and npm; reaches only the npm registry.
set -euo pipefail
cd "$(dirname "$0")/../tests/oauth_server"

command -v node >/dev/null || { echo "oauth-server-setup: node is not installed" >&2; exit 1; }
command -v npm >/dev/null || { echo "oauth-server-setup: npm is not installed" >&2; exit 1; }

in_sync=$(node -e '
  const fs = require("fs");
  try {
    const want = JSON.parse(fs.readFileSync("package-lock.json")).packages;
    const have = JSON.parse(fs.readFileSync("node_modules/.package-lock.json")).packages;
    delete want[""];
    const ok = Object.keys(want).every((k) => have[k] && have[k].version === want[k].version
      && fs.existsSync(k + "/package.json"));
    console.log(ok && Object.keys(have).length === Object.keys(want).length ? "yes" : "no");
  } catch { console.log("no"); }
')
if [ "$in_sync" = yes ]; then
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
