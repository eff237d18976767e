"""Operations: running a camera worker as a service (metrics, health, systemd notify and watchdog, JSON logs).

Modules are imported where used (``daemon.ops.service`` pulls in the bridge and Prometheus), so the command
line stays quick to start.
"""

import signal

# What stops a worker or a fleet cleanly (sources closed, outputs and the fleet backlog flushed, exit 0):
# systemd's SIGTERM, Ctrl-C, and the SIGHUP of a terminal or an ssh session that goes away.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
