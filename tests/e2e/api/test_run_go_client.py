"""A Go child (net/http honours HTTPS_PROXY and SSL_CERT_FILE) gets the credential through `authsome run`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from authsome import Authsome

if TYPE_CHECKING:
    from tests.e2e.api.conftest import Runs

pytestmark = pytest.mark.e2e

GO_PROGRAM = """package main

import (
\t"fmt"
\t"io"
\t"net/http"
\t"os"
)

func main() {
\treq, _ := http.NewRequest("GET", os.Args[1], nil)
\treq.Header.Set("Authorization", "Bearer "+os.Getenv("OPENAI_API_KEY"))
\tresp, err := http.DefaultClient.Do(req)
\tif err != nil {
\t\tfmt.Println("error:", err)
\t\tos.Exit(3)
\t}
\tbody, _ := io.ReadAll(resp.Body)
\tfmt.Println(resp.StatusCode, string(body))
}
"""


@pytest.mark.skipif(shutil.which("go") is None, reason="Go is not installed (scripts/test installs golang-go)")
def test_go_net_http_child(openai_api: Any, tmp_path: Path, run: Runs) -> None:
    key = "sk-go-0123456789abcdef"
    Authsome(env={"OPENAI_API_KEY": key}).login("openai")
    (tmp_path / "main.go").write_text(GO_PROGRAM)
    go_env = {
        **os.environ,
        "GOCACHE": str(tmp_path / "gocache"),
        "GOPATH": str(tmp_path / "gopath"),
        "GO111MODULE": "off",
        "GOFLAGS": "",
    }
    subprocess.run(
        ["go", "build", "-o", str(tmp_path / "client"), "main.go"],
        cwd=tmp_path,
        env=go_env,
        check=True,
        capture_output=True,
        timeout=180,
    )
    out = tmp_path / "out.txt"
    code = run(
        Authsome(),
        ["sh", "-c", f"{tmp_path / 'client'} https://api.openai.com/v1/models > {out}"],
        upstream_ca=openai_api.ca_file,
        confdir=tmp_path / "mitm",
    )
    assert code == 0, out.read_text()
    assert out.read_text().startswith("200")
    assert openai_api.seen == [f"Bearer {key}"]  # the placeholder the program sent was replaced
