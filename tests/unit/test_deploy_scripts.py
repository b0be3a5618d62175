"""Deploy shell scripts: promtool's apt install path, and no early-closing pipe readers.

A script under ``set -o pipefail`` that pipes into a reader which stops at the first match
(``grep -q``, ``head``, ``awk '{...; exit}'``) fails with SIGPIPE (exit 141) whenever the
writer still has output to write, i.e. on long output: ``apt-cache policy prometheus |
grep -q ...`` made ``make test`` stop on every machine without promtool.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL_SCRIPT = ROOT / "deploy" / "prometheus" / "test.sh"
BASH = shutil.which("bash") or "/bin/bash"

# 5,000 version-table lines (~300 KB) after the Candidate line: far more than a pipe buffer
# (64 KiB), so a reader that exits at the Candidate line always leaves the writer with a
# broken pipe.
LONG_POLICY = """#!/bin/sh
echo 'prometheus:'
echo '  Installed: (none)'
echo '  Candidate: 2.42.0+ds-5+deb12u1'
echo '  Version table:'
i=0
while [ "$i" -lt 5000 ]; do
  echo '     2.42.0+ds-5+deb12u1 500 http://deb.example/debian bookworm/main amd64 Packages'
  i=$((i + 1))
done
"""

NO_CANDIDATE_POLICY = """#!/bin/sh
echo 'prometheus:'
echo '  Installed: (none)'
echo '  Candidate: (none)'
"""


def _write_exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def _fake_bin(tmp_path: Path, policy: str) -> Path:
    """A PATH holding only fakes for id (root), apt-get and apt-cache, plus dirname.

    The fake apt-get's `install` puts a fake promtool on this PATH and logs its arguments;
    the real promtool (if the machine has one) is not on it.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    dirname = shutil.which("dirname")
    chmod = shutil.which("chmod")
    assert dirname and chmod
    (bin_dir / "dirname").symlink_to(dirname)
    _write_exe(bin_dir / "id", "#!/bin/sh\necho 0\n")
    _write_exe(bin_dir / "apt-cache", policy)
    _write_exe(
        bin_dir / "apt-get",
        f"""#!/bin/sh
echo "$@" >> '{tmp_path}/apt-get.log'
if [ "$1" = install ]; then
  printf '#!/bin/sh\\necho promtool, version 2.42.0\\n' > '{bin_dir}/promtool'
  '{chmod}' 755 '{bin_dir}/promtool'
fi
""",
    )
    return bin_dir


def _find_promtool(bin_dir: Path) -> subprocess.CompletedProcess[str]:
    # sourcing defines the functions (and `set -euo pipefail`) without running the checks
    return subprocess.run(
        [BASH, "-c", 'source "$1"; find_promtool', "find_promtool", str(PROMTOOL_SCRIPT)],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_promtool_is_installed_when_apt_cache_prints_a_long_policy(tmp_path: Path) -> None:
    bin_dir = _fake_bin(tmp_path, LONG_POLICY)
    result = _find_promtool(bin_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(bin_dir / "promtool")
    log = (tmp_path / "apt-get.log").read_text().splitlines()
    # update, then one install of the package alone
    assert log == ["update -qq", "install -y -qq --no-install-recommends prometheus"]


def test_a_missing_prometheus_package_is_reported_without_installing(tmp_path: Path) -> None:
    bin_dir = _fake_bin(tmp_path, NO_CANDIDATE_POLICY)
    result = _find_promtool(bin_dir)
    assert result.returncode == 1
    assert "no prometheus package in the apt sources" in result.stderr
    assert (tmp_path / "apt-get.log").read_text().splitlines() == ["update -qq"]
    assert not (bin_dir / "promtool").exists()


# a pipe into a reader that may stop before its writer is done
_EARLY_READER = re.compile(
    r"\|\s*(grep\s+(-\w*[qm]|--quiet|--max-count)|head\b|awk\b[^|]*\bexit\b|sed\b[^|]*\bq\b)"
)


def _pipefail_scripts() -> list[Path]:
    files = subprocess.run(
        ["git", "ls-files", "*.sh"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    scripts = [ROOT / f for f in files]
    return [p for p in scripts if "pipefail" in p.read_text()]


def test_no_pipefail_script_pipes_into_a_reader_that_stops_early() -> None:
    scripts = _pipefail_scripts()
    assert PROMTOOL_SCRIPT in scripts  # the check sees the script that had the bug
    offending = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for p in scripts
        for n, line in enumerate(p.read_text().splitlines(), start=1)
        if not line.lstrip().startswith("#") and _EARLY_READER.search(line)
    ]
    assert offending == [], "capture the output first, then match it:\n" + "\n".join(offending)


def test_the_bench_refuses_a_port_in_use_and_names_the_settings_that_move_it(tmp_path: Path) -> None:
    import os
    import socket

    with socket.socket() as taken, socket.socket() as spare:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        spare.bind(("127.0.0.1", 0))
        controller = spare.getsockname()[1]  # free once closed below
        spare.close()
        env = {k: v for k, v in os.environ.items() if k != "SALESOPS_BENCH_BOOTSTRAP"}
        env |= {
            "SALESOPS_BENCH_KAFKA_PORT": str(port),
            "SALESOPS_BENCH_KAFKA_CONTROLLER_PORT": str(controller),
            "SALESOPS_BENCH_DIR": str(tmp_path / "bench"),  # not a bench that may be running
        }
        done = subprocess.run(
            ["bash", str(ROOT / "deploy" / "local" / "run-bench.sh"), "--quick"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"port {port} is already in use" in done.stderr
    assert "SALESOPS_BENCH_KAFKA_PORT" in done.stderr and "SALESOPS_BENCH_BOOTSTRAP" in done.stderr
