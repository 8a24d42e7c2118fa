"""Every ``connect`` call of a process tree, recorded by ``strace -f``, and the ones that left
loopback: how the offline tests see a lookup of a tracking host (a connect to a name server)
or any outbound connection, whatever library makes it."""

from __future__ import annotations

import ipaddress
import re
import shutil
from pathlib import Path

INET = re.compile(
    r"connect\(\d+, \{sa_family=AF_INET6?, sin6?_port=htons\((\d+)\), "
    r'(?:sin_addr=inet_addr\("([^"]+)"\)|[^}]*inet_pton\(AF_INET6, "([^"]+)")'
)


def strace_prefix(trace: Path) -> list[str]:
    """The command prefix that records the connect calls of a process tree into ``trace``
    (seccomp-filtered: only those calls stop the traced processes); empty without strace."""
    strace = shutil.which("strace")
    if strace is None:
        return []
    return [strace, "-f", "--seccomp-bpf", "-qq", "-e", "trace=connect", "-o", str(trace)]


def outbound(trace: str) -> list[str]:
    """The recorded connect calls to anything but loopback, and any to a name server."""
    out = []
    for line in trace.splitlines():
        found = INET.search(line)
        if found is None:
            continue
        port, v4, v6 = found.groups()
        if not ipaddress.ip_address(v4 or v6).is_loopback or int(port) == 53:
            out.append(line.strip())
    return out


def traced_processes(trace: str) -> int:
    """How many processes the trace saw."""
    return len({line.split()[0] for line in trace.splitlines() if line.strip()})
