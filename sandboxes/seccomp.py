"""The seccomp filter bwrap installs before the candidate starts (``bwrap --seccomp FD``).

It denies, with EPERM, what Docker's default profile denies to a container without capabilities:
new namespaces (``unshare``, ``setns``, ``clone`` with any ``CLONE_NEW*`` flag; ``clone3`` gets
ENOSYS because its flags sit behind a pointer a filter cannot read, so libc falls back to
``clone``), the key management calls (a per-uid keyring is state that outlives a run),
``bpf``, ``perf_event_open``, ``userfaultfd``, mounting (old and new API), module loading,
``kexec_*``, ``reboot``, swap, clock setting, accounting, quotas, io_uring, NUMA policy
(``ptrace``, ``process_vm_*`` and ``kcmp`` stay allowed, as in Docker on kernels >= 4.8: the uid
and pid namespace already fence them). Everything else is
allowed (a denylist: the rest of the wall is the namespaces, no capabilities and a non-root uid).

Syscalls of a foreign ABI (32-bit ``int 0x80`` on x86-64, x32) kill the process: libseccomp's
default bad-arch action, so the filter cannot be bypassed through another syscall table.

The BPF is built once per process with libseccomp (through ``pyseccomp``, which mirrors the
official Python bindings' API), never hand-assembled; each run gets it on a fresh pipe.
"""

from __future__ import annotations

import errno
import functools
import os

from .base import SandboxError

#: Denied outright (EPERM). Names unknown to this libseccomp/arch are skipped.
DENY = (
    # namespaces
    "unshare", "setns",
    # keyrings
    "add_key", "keyctl", "request_key",
    # kernel attack surface / observation
    "bpf", "perf_event_open", "userfaultfd", "lookup_dcookie", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "fanotify_init", "open_by_handle_at",
    "quotactl", "quotactl_fd", "nfsservctl",
    # mounts (old and new API)
    "mount", "umount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount",
    "fspick", "open_tree", "move_mount", "mount_setattr",
    # modules, kexec, reboot, swap
    "init_module", "finit_module", "delete_module", "create_module", "query_module",
    "get_kernel_syms", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff",
    # clocks, accounting, legacy
    "settimeofday", "stime", "clock_settime", "clock_adjtime", "adjtimex", "acct", "uselib",
    "ustat", "sysfs", "_sysctl", "vm86", "vm86old", "iopl", "ioperm", "syslog",
    # NUMA policy (Docker denies without CAP_SYS_NICE)
    "mbind", "set_mempolicy", "move_pages", "migrate_pages",
    "vhangup",
)

#: every CLONE_NEW* flag (clone's first argument on x86-64 and arm64)
CLONE_NEW_FLAGS = {
    "CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000, "CLONE_NEWTIME": 0x00000080,
}


@functools.lru_cache(maxsize=1)
def filter_bpf() -> bytes:
    """The compiled BPF program (built once per process)."""
    try:
        import pyseccomp as sc
    except (ImportError, RuntimeError) as e:  # RuntimeError: libseccomp.so missing
        raise SandboxError(f"seccomp for bwrap needs pyseccomp and libseccomp: pip install "
                           f"pyseccomp; apt-get install -y libseccomp2 ({e})") from e
    f = sc.SyscallFilter(sc.ALLOW)
    eperm = sc.ERRNO(errno.EPERM)
    for name in DENY:
        try:
            f.add_rule(eperm, name)
        except (ValueError, OSError, RuntimeError):
            continue  # not a syscall on this architecture
    for flag in CLONE_NEW_FLAGS.values():
        f.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    try:
        f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    except (ValueError, OSError, RuntimeError):
        pass
    r, w = os.pipe()
    try:
        with os.fdopen(w, "wb") as wf:
            f.export_bpf(wf)
        chunks = []
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
    finally:
        os.close(r)
    return b"".join(chunks)


def filter_fd() -> int:
    """A pipe read end holding the filter, for ``bwrap --seccomp FD`` (the caller closes it)."""
    data = filter_bpf()
    r, w = os.pipe()
    try:
        if len(data) > 65536:  # more than a pipe buffer: would block; never the case here
            raise SandboxError(f"seccomp filter unexpectedly large ({len(data)} bytes)")
        os.write(w, data)
    finally:
        os.close(w)
    return r
