"""deploy/prometheus/test.sh: the version gate of the alert rules (keep_firing_for needs
Prometheus 2.42) and the apt path that finds the Prometheus server for the integration test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_deploy_scripts import BASH, LONG_POLICY, PROMTOOL_SCRIPT, _write_exe


def _run(function: str, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BASH, "-c", f'source "$1"; shift; {function} "$@"', function, str(PROMTOOL_SCRIPT), *args],
        env={"PATH": path} if path else None,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("version", "ok"),
    [
        ("promtool, version 2.42.0+ds (branch: debian/sid)", True),
        ("promtool, version 2.55.1 (branch: HEAD)", True),
        ("promtool, version 3.1.0 (branch: HEAD)", True),
        ("promtool, version 2.41.9 (branch: HEAD)", False),
        ("promtool, version 1.8.2", False),
    ],
)
def test_rules_need_prometheus_2_42(version: str, ok: bool) -> None:
    result = _run("require_version", version)
    assert (result.returncode == 0) is ok, result.stderr
    if not ok:
        assert "older than 2.42" in result.stderr and "keep_firing_for" in result.stderr


def test_prometheus_server_is_installed_from_the_same_package(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    chmod, dirname = shutil.which("chmod"), shutil.which("dirname")
    assert chmod and dirname
    _write_exe(bin_dir / "id", "#!/bin/sh\necho 0\n")
    _write_exe(bin_dir / "apt-cache", LONG_POLICY)
    # the fake package install puts a fake prometheus server on PATH
    _write_exe(
        bin_dir / "apt-get",
        f"""#!/bin/sh
echo "$@" >> '{tmp_path}/apt-get.log'
if [ "$1" = install ]; then
  printf '#!/bin/sh\\n' > '{bin_dir}/prometheus'
  '{chmod}' 755 '{bin_dir}/prometheus'
fi
""",
    )
    (bin_dir / "dirname").symlink_to(dirname)
    result = _run("find_prometheus", path=str(bin_dir))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(bin_dir / "prometheus")
    assert "prometheus not found; installing Debian's prometheus package" in result.stderr
    log = (tmp_path / "apt-get.log").read_text().splitlines()
    assert log == ["update -qq", "install -y -qq --no-install-recommends prometheus"]
