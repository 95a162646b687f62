"""deploy/nginx/namazu.conf passes ``nginx -t`` with a throw-away certificate."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import make_tls_files

SITE = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "namazu.conf"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx-light)")
def test_site_config_passes_nginx_syntax_check(tmp_path):
    make_tls_files(tmp_path)
    site = SITE.read_text()
    replacements = {
        "/etc/letsencrypt/live/namazu.example.org/fullchain.pem": str(tmp_path / "server.crt"),
        "/etc/letsencrypt/live/namazu.example.org/privkey.pem": str(tmp_path / "server.key"),
        "include /etc/nginx/proxy_params;": "proxy_set_header Host $host;",
    }
    for old, new in replacements.items():
        assert old in site, f"deploy/nginx/namazu.conf no longer contains {old!r}"
        site = site.replace(old, new)
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\n"
        f"error_log {tmp_path}/error.log;\n"
        "events {}\n"
        "http {\n"
        f"  access_log off;\n"
        f"  client_body_temp_path {tmp_path};\n"
        f"  include {tmp_path}/site.conf;\n"
        "}\n"
    )
    result = subprocess.run(
        [NGINX, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr
    assert "[warn]" not in result.stderr, result.stderr
