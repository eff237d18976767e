"""A process made to believe it runs on a host of N processors (``fake_host_env``): ``tests/fakecpus.c`` built
into a preload library, and the processor files it reads under a folder of this host's making (one thread a
core, one package, /proc/cpuinfo's first processor written N times). Skips where no C compiler is found.

Import from a test module as ``from _cpus import fake_host_env`` (pytest puts ``tests/`` on sys.path).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SHIM_SOURCE = Path(__file__).with_name("fakecpus.c")


def build_shim(folder: Path) -> Path:
    """``fakecpus.c`` built into ``folder``; skips the calling test where there is no C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc) to build tests/fakecpus.c")
    out = folder / "fakecpus.so"
    cmd = [cc, "-O2", "-shared", "-fPIC", "-o", str(out), str(SHIM_SOURCE), "-ldl"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return out


def _cpuinfo(n: int) -> str:
    """/proc/cpuinfo of ``n`` processors, each a core of its own: this host's first one, renumbered."""
    first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    fields = {"processor": "{k}", "core id": "{k}", "apicid": "{k}", "initial apicid": "{k}"}
    fields |= {"cpu cores": str(n), "siblings": str(n)}
    blocks = []
    for k in range(n):
        block = first
        for name, value in fields.items():
            block = re.sub(rf"^{name}\s*:.*$", f"{name}\t: {value.format(k=k)}", block, flags=re.M)
        blocks.append(block)
    return "\n\n".join(blocks) + "\n\n"


def write_processor_files(root: Path, n: int) -> None:
    """/sys/devices/system/cpu, /proc/cpuinfo and the cgroup cpuset of a host of ``n`` processors, under
    ``root``."""
    every = f"0-{n - 1}"
    cpu = root / "sys/devices/system/cpu"
    cpu.mkdir(parents=True)
    for name in ("possible", "present", "online"):
        (cpu / name).write_text(f"{every}\n")
    (cpu / "offline").write_text("\n")
    for k in range(n):
        topology = cpu / f"cpu{k}/topology"
        topology.mkdir(parents=True)
        own = {
            "core_id": k,
            "cluster_id": k,
            "thread_siblings_list": k,
            "core_cpus_list": k,
            "cluster_cpus_list": k,
        }
        shared = {
            "physical_package_id": 0,
            "die_id": 0,
            "core_siblings_list": every,
            "package_cpus_list": every,
        }
        for name, value in (own | shared | {"die_cpus_list": every}).items():
            (topology / name).write_text(f"{value}\n")
    (root / "proc").mkdir()
    (root / "proc/cpuinfo").write_text(_cpuinfo(n))
    cpuset = root / "sys/fs/cgroup/cpuset"
    cpuset.mkdir(parents=True)
    (cpuset / "cpuset.cpus").write_text(f"{every}\n")


def fake_host_env(folder: Path, n: int, shim: Path) -> dict[str, str]:
    """The variables that make a process started with them see ``n`` processors (files written under
    ``folder``)."""
    write_processor_files(folder, n)
    return {"LD_PRELOAD": str(shim), "FAKE_CPUS": str(n), "FAKE_ROOT": str(folder)}
