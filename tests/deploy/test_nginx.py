"""deploy/nginx/namazu.conf passes ``nginx -t`` with a throw-away certificate."""

from __future__ import annotations

import subprocess

import pytest

from tests.deploy.conftest import make_tls_files
from tests.deploy.nginx_site import NGINX, SITE, local_files, replace_all


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx-light)")
def test_site_config_passes_nginx_syntax_check(tmp_path):
    make_tls_files(tmp_path)
    site = replace_all(SITE.read_text(), local_files(tmp_path))
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
