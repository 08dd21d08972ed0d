"""``dgm sandbox exec|check`` through click, on the real bwrap backend, plus the probe suite."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from sandboxes.bwrap import BwrapSandbox
from sandboxes.cli import LIMIT_EXIT_CODES, parse_size_mb, sandbox
from sandboxes.probes import PROBES, run_probes
from sandboxes.process import ProcessSandbox

needs_bwrap = pytest.mark.skipif(not BwrapSandbox.available(),
                                 reason="bwrap missing: apt-get install -y bubblewrap")


def _invoke(*args):
    return CliRunner().invoke(sandbox, list(args), catch_exceptions=False)


def test_parse_size():
    assert parse_size_mb("512M") == 512 and parse_size_mb("2G") == 2048 and parse_size_mb("100") == 100
    assert parse_size_mb("none") is None and parse_size_mb("1.5g") == 1536


@needs_bwrap
def test_exec_passes_exit_code_and_output(tmp_path):
    r = _invoke("exec", "--workdir", str(tmp_path), "--", "sh", "-c", "echo hi; echo oops >&2; exit 5")
    assert r.exit_code == 5 and r.stdout == "hi\n" and "oops" in r.stderr
    r = _invoke("exec", "--", "python", "-c", "import sys; print(sys.prefix)")
    assert r.exit_code == 0, r.stderr


@needs_bwrap
@pytest.mark.parametrize("args,limit", [
    (["--timeout", "0.5", "--", "sleep", "5"], "timeout"),
    (["--memory", "64M", "--", "python", "-c", "b = bytearray(300 * 2**20); b[::4096] = b'x' * (len(b) // 4096)"], "memory"),
    (["--file-size", "1M", "--", "sh", "-c", "head -c 2000000 /dev/zero > f"], "file_size"),
])
def test_exec_limit_exit_codes(args, limit):
    r = _invoke("exec", *args)
    assert r.exit_code == LIMIT_EXIT_CODES[limit], r.stderr
    assert f"exceeded the {'wall-clock' if limit == 'timeout' else limit}" in r.stderr


def test_exec_refuses_process_backend_without_trusted():
    r = _invoke("exec", "--backend", "process", "--", "true")
    assert r.exit_code == 125 and "--trusted" in r.stderr
    assert _invoke("exec", "--backend", "process", "--trusted", "--", "true").exit_code == 0


@needs_bwrap
def test_check_bwrap_subset_contained():
    r = _invoke("check", "--probe", "host_loopback", "--probe", "tamper_metric", "--probe", "read_host_file")
    assert r.exit_code == 0, r.stdout
    assert "3/3 contained" in r.stdout


def test_check_process_backend_escapes_and_exits_nonzero():
    r = _invoke("check", "--backend", "process", "--trusted", "--probe", "tamper_metric", "--json")
    assert r.exit_code == 1 and '"contained": false' in r.stdout


@needs_bwrap
def test_every_probe_is_contained_by_bwrap():
    results = run_probes(BwrapSandbox())
    assert [r.name for r in results] == list(PROBES)
    escaped = {r.name: r.detail for r in results if not r.contained}
    assert not escaped


def test_probes_detect_escapes_from_the_process_backend():
    # The probes are only worth something if they notice a real escape.
    names = ["host_loopback", "write_outside", "read_host_file", "evaluator_files", "tamper_metric",
             "signal_outside", "host_processes"]
    results = run_probes(ProcessSandbox(), names)
    assert {r.name: r.contained for r in results} == {n: False for n in names}
