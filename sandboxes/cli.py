"""``dgm sandbox ...``: run a command in a sandbox, check containment, build the docker image.

Exit codes of ``dgm sandbox exec``:

====  =====================================================================
 N    the command's own exit code (0-255; 128+S when it died of signal S)
124   killed: wall-clock timeout (as GNU ``timeout``)
123   killed: CPU-time limit
122   killed: memory limit
121   killed: pids (process count) limit
120   killed: file-size limit
119   killed: output limit (stdout/stderr file grew past the file-size limit)
118   disk quota of the work directory (writes failed with ENOSPC)
125   the sandbox itself failed (missing backend, bad option): not the command's fault
127   the command could not be started (not found)
====  =====================================================================
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click

from . import scratch
from .base import Limits, SandboxError, python_ro_paths

LIMIT_EXIT_CODES = {"timeout": 124, "cpu": 123, "memory": 122, "pids": 121, "file_size": 120,
                    "output": 119, "disk quota": 118}
EXIT_SANDBOX_ERROR = 125
EXIT_NOT_STARTED = 127


def parse_size_mb(text: str | None) -> int | None:
    """'512M' / '2G' / '1024' (MiB) / 'none' -> MiB or None."""
    if text is None or str(text).lower() in ("none", "off", "0", ""):
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)i?[bB]?\s*", str(text))
    if not m:
        raise click.BadParameter(f"{text!r}: use a size like 512M, 2G or 'none'")
    value, unit = float(m.group(1)), m.group(2).lower()
    mb = value * {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024 * 1024}[unit]
    return max(1, int(mb))


def _opt_num(value: float | None) -> float | None:
    return None if value is None or value <= 0 else value


@click.group(name="sandbox")
def sandbox() -> None:
    """Run commands in a sandbox and check that it contains them."""


@sandbox.command("exec", context_settings={"ignore_unknown_options": True,
                                           "allow_interspersed_args": False})
@click.option("--backend", default="auto", show_default=True,
              help="auto, bwrap, docker or process (process needs --trusted)")
@click.option("--trusted", is_flag=True, help="allow the unisolated 'process' backend")
@click.option("--memory", default="512M", show_default=True, help="memory limit (e.g. 512M, 2G, none)")
@click.option("--pids", default=64, show_default=True, type=int, help="process limit (0 = none)")
@click.option("--cpu-seconds", default=60.0, show_default=True, type=float, help="CPU time (0 = none)")
@click.option("--cpus", default=None, type=float, help="CPU bandwidth in cores (cgroup/docker)")
@click.option("--file-size", default="64M", show_default=True, help="largest file it may write")
@click.option("--timeout", default=60.0, show_default=True, type=float, help="wall-clock seconds")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="writable work directory (default: a fresh temporary one, removed afterwards)")
@click.option("--disk", default="4G", show_default=True,
              help="disk quota of the work directory (e.g. 512M, 4G, none; root only: loop-mounted ext4)")
@click.option("--inodes", default=200_000, show_default=True, type=int,
              help="how many files and directories the work directory may hold")
@click.option("--gpus", default=0, show_default=True, type=int, help="lease this many GPUs")
@click.option("--env", "envs", multiple=True, metavar="K=V", help="environment variable (repeatable)")
@click.option("--ro", "ro", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="extra host path to expose read-only (repeatable)")
@click.option("--no-python", is_flag=True, help="do not expose this Python installation")
@click.option("--output-bytes", default=1_000_000, show_default=True, type=int,
              help="keep the last N bytes of stdout and of stderr")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_cmd(backend, trusted, memory, pids, cpu_seconds, cpus, file_size, timeout, workdir, disk,
             inodes, gpus, envs, ro, no_python, output_bytes, cmd) -> None:
    """Run CMD in a sandbox and exit with its exit code (see the module doc for limit codes).

    Example: dgm sandbox exec --memory 256M --timeout 5 -- python3 -c 'print(1)'
    """
    from .factory import make_sandbox

    try:
        env = {}
        for item in envs:
            k, sep, v = item.partition("=")
            if not sep or not k:
                raise click.BadParameter(f"{item!r}: use K=V", param_hint="--env")
            env[k] = v
        limits = Limits(wall_s=timeout, cpu_s=int(cpu_seconds) if _opt_num(cpu_seconds) else None,
                        memory_mb=parse_size_mb(memory), pids=pids or None,
                        file_mb=parse_size_mb(file_size), output_bytes=output_bytes, cpus=_opt_num(cpus))
        disk_mb = parse_size_mb(disk)
        quota_opts = {"disk": disk_mb * 2**20 if disk_mb else None, "inodes": inodes or None}
        if backend == "process" and disk == "4G":  # trusted runs: no quota unless asked for
            quota_opts = {}
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    tmp = None
    lease = None
    try:
        sb = make_sandbox(backend, trusted=trusted, **quota_opts)
        if workdir is None:
            tmp = str(scratch.mkdtemp("exec-"))
            workdir = Path(tmp)
        else:
            workdir.mkdir(parents=True, exist_ok=True)
        if gpus:
            from .gpu import GpuPool

            lease = GpuPool().lease(gpus, timeout=0)
        ro_paths = list(ro) + ([] if no_python else python_ro_paths())
        if not no_python and "PATH" not in env:  # `python` inside means this interpreter
            from ._runner import DEFAULT_PATH

            env["PATH"] = f"{Path(sys.executable).parent}:{DEFAULT_PATH}"
        result = sb.run(list(cmd), workdir, limits, env=env, ro_paths=ro_paths, gpu=lease)
    except (SandboxError, TimeoutError) as e:
        click.echo(f"dgm sandbox: {e}", err=True)
        sys.exit(EXIT_SANDBOX_ERROR)
    finally:
        if lease is not None:
            lease.release()
        if tmp:  # any depth, never recursing; releases the quota mount too
            from .fs import remove_tree

            try:
                remove_tree(tmp)
            except OSError as e:
                click.echo(f"dgm sandbox: could not remove the work directory {tmp}: {e}", err=True)
        elif workdir is not None:  # the caller's directory: its files stay, the quota mount goes
            from . import quota

            quota.release(workdir, keep=True)
    sys.stdout.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.write(result.stderr)
    if result.limit_hit:
        limit_values = {"memory": f"{limits.memory_mb} MB", "cpu": f"{limits.cpu_s} CPU-s",
                        "pids": f"{limits.pids} processes", "file_size": f"{limits.file_mb} MB",
                        "output": f"{limits.file_mb} MB"}
        value = limit_values.get(result.limit_hit)
        click.echo(f"dgm sandbox: {result.describe()}{f' ({value})' if value else ''}; "
                   f"backend {result.backend}, exit code {LIMIT_EXIT_CODES.get(result.limit_hit, 1)}",
                   err=True)
        sys.exit(LIMIT_EXIT_CODES.get(result.limit_hit, 1))
    if result.returncode is None:
        sys.exit(EXIT_NOT_STARTED)
    rc = result.returncode
    sys.exit(128 - rc if rc < 0 else rc)


@sandbox.command("check")
@click.option("--backend", default="auto", show_default=True)
@click.option("--trusted", is_flag=True, help="allow checking the unisolated 'process' backend")
@click.option("--probe", "only", multiple=True, help="run only this probe (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def check_cmd(backend, trusted, only, as_json) -> None:
    """Run the containment probes; exit 1 if anything escaped (2 if the sandbox cannot run)."""
    from rich.console import Console
    from rich.table import Table

    from .factory import make_sandbox
    from .probes import PROBES, run_probes

    unknown = [p for p in only if p not in PROBES]
    if unknown:
        raise click.UsageError(f"unknown probe(s) {unknown}; known: {', '.join(PROBES)}")
    try:
        sb = make_sandbox(backend, trusted=trusted)
    except SandboxError as e:
        click.echo(f"dgm sandbox: {e}", err=True)
        sys.exit(2)
    console = Console(stderr=as_json)
    if not as_json:
        console.print(f"checking backend [bold]{sb.name}[/bold] ({len(only) or len(PROBES)} probes)...")
    results = run_probes(sb, list(only) or None)
    escaped = [r for r in results if not r.contained]
    if as_json:
        click.echo(json.dumps({"backend": sb.name, "escaped": len(escaped), "probes": [
            {"name": r.name, "contained": r.contained, "detail": r.detail, "seconds": round(r.seconds, 3)}
            for r in results]}, indent=2))
    else:
        table = Table(title=f"containment: {sb.name}")
        table.add_column("probe")
        table.add_column("what it tries")
        table.add_column("result")
        table.add_column("detail", overflow="fold")
        table.add_column("s", justify="right")
        for r in results:
            verdict = "[green]contained[/green]" if r.contained else "[bold red]ESCAPED[/bold red]"
            table.add_row(r.name, PROBES[r.name][0], verdict, r.detail, f"{r.seconds:.1f}")
        console.print(table)
        console.print(f"{len(results) - len(escaped)}/{len(results)} contained"
                      + (f"; escaped: {', '.join(r.name for r in escaped)}" if escaped else ""))
    sys.exit(1 if escaped else 0)


@sandbox.command("build-image")
@click.option("--tag", default=None, help="image tag (default dgm-sandbox:bookworm)")
@click.option("--method", type=click.Choice(["auto", "debootstrap", "host"]), default="auto",
              show_default=True, help="host (= auto): copy of this machine's binaries and "
              "libraries, offline, ~20 s; debootstrap: clean Debian minbase + python3 from the apt "
              "mirror, ~2 min")
@click.option("--force", is_flag=True, help="rebuild even if the tag exists")
def build_image_cmd(tag, method, force) -> None:
    """Build the docker sandbox image from a local root file system (no registry pull)."""
    from .docker_backend import IMAGE, build_image

    try:
        image_id = build_image(tag or IMAGE, method=method, force=force)
    except SandboxError as e:
        click.echo(f"dgm sandbox: {e}", err=True)
        sys.exit(EXIT_SANDBOX_ERROR)
    click.echo(f"{tag or IMAGE} {image_id}")


@sandbox.command("backends")
def backends_cmd() -> None:
    """List the backends that can run on this machine, strongest first."""
    from .factory import available_backends

    for name in available_backends():
        click.echo(name)


main = sandbox

if __name__ == "__main__":  # pragma: no cover
    sandbox()
