"""Operations: running a camera worker as a service (metrics, health, systemd notify and watchdog, JSON logs).

Modules are imported where used (``daemon.ops.service`` pulls in the bridge and Prometheus), so the command
line stays quick to start.
"""
