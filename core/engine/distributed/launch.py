"""Launch planning: check a multi-rank job before DeepSpeed's launcher starts it, then run it.

`plan_launch` turns `astrotransfer launch` options into the arguments of DeepSpeed's own
launchers (`deepspeed.launcher.launch` on one machine; `deepspeed.launcher.runner` with a
hostfile: pdsh over ssh, or one launcher per node with --no-ssh), which start
`python -m astrotransfer.cli <train|predict> ...` once per rank with RANK/WORLD_SIZE set.
Problems a user can fix (no GPU, a host that does not answer, no pdsh) are found here,
before anything starts, because the launcher itself would hang on an unreachable host.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from ...errors import UserError
from .options import ENV_OPTIONS, encode_options, free_port

LAUNCHABLE = ("train", "predict")
DEFAULT_PORT = 29500

# ---------------------------------------------------------------- reachability


def probe_host(host: str, port: int | None, timeout: float) -> str | None:
    """Why `host` cannot be used (None if it can): its name must resolve and, when `port`
    is given, something must accept a TCP connection there, each within `timeout` s.

    getaddrinfo has no timeout of its own and can block for a minute on a dead resolver,
    so it runs in a daemon thread that is abandoned when the deadline passes.
    """
    box: dict = {}

    def resolve():
        try:
            box["addr"] = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)[0][4]
        except OSError as exc:
            box["error"] = exc

    thread = threading.Thread(target=resolve, daemon=True, name=f"resolve-{host}")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return f"its name did not resolve within {timeout:g} s"
    if "error" in box:
        return f"its name does not resolve ({box['error'].strerror or box['error']})"
    if port is None:
        return None
    try:
        with socket.create_connection(box["addr"][:2], timeout=timeout):
            return None
    except socket.timeout:
        return f"nothing answered on port {port} within {timeout:g} s"
    except OSError as exc:
        return f"port {port} refused the connection ({exc.strerror or exc})"


def read_hostfile(path: Path) -> dict[str, int]:
    """host -> slots, parsed by DeepSpeed's own parser so both agree on the format."""
    from deepspeed.launcher.runner import _parse_hostfile

    if not path.is_file():
        raise UserError(f"hostfile {path} does not exist; pass an MPI-style file of "
                        f"'<host> slots=<n>' lines")
    try:
        return dict(_parse_hostfile(path.read_text().splitlines()))
    except ValueError as exc:
        raise UserError(f"hostfile {path}: {exc}; each line must read '<host> slots=<n>'") from None


# ---------------------------------------------------------------- the runner's arguments


def plan_launch(command: list[str], *, num_procs=None, num_gpus=None, hostfile=None,
                num_nodes=None, master_addr=None, master_port=None, no_ssh=False,
                node_rank=None, ssh_port=None, connect_timeout=5.0) -> tuple[bool, list[str]]:
    """Check everything checkable, then return (local?, arguments).

    On one machine the arguments are a full command for `deepspeed.launcher.launch`, the
    per-node launcher (what DeepSpeed's runner itself starts for a single node, minus one
    process and one deepspeed import); with a hostfile they are the runner's arguments.
    """
    if not command or command[0] not in LAUNCHABLE:
        got = f"'{command[0]}'" if command else "nothing"
        raise UserError(f"launch runs {' or '.join(LAUNCHABLE)} on every rank, got {got}; "
                        f"write `astrotransfer launch --num-procs 2 -- train ...`")
    if num_procs is not None and num_gpus is not None:
        raise UserError("pass either --num-procs (CPU ranks) or --num-gpus (GPU ranks), not both")
    for name, value in (("--num-procs", num_procs), ("--num-gpus", num_gpus),
                        ("--num-nodes", num_nodes)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    gpu_ids = _check_gpus(num_gpus)
    if (no_ssh or num_nodes is not None) and hostfile is None:
        raise UserError("--no-ssh and --num-nodes need --hostfile naming every node")
    if no_ssh and (node_rank is None or not master_addr):
        raise UserError("--no-ssh starts one node's ranks: it needs --node-rank R and "
                        "--master-addr of node 0 (the same on every node)")
    tail = ["--no_local_rank", "--module", "--log_level=warning", "astrotransfer.cli", *command]
    if hostfile is None:
        if num_procs is None and num_gpus is None:
            if not gpu_ids:
                raise UserError("say how many ranks to start: --num-procs N (CPU ranks; this "
                                "machine has no GPU) or --num-gpus N")
            num_gpus = len(gpu_ids)
        slots = gpu_ids[:num_gpus] if num_gpus else list(range(num_procs))
        world = base64.urlsafe_b64encode(json.dumps({"localhost": slots}).encode()).decode()
        return True, [sys.executable, "-u", "-m", "deepspeed.launcher.launch",
                      f"--world_info={world}", f"--master_addr={master_addr or '127.0.0.1'}",
                      f"--master_port={master_port or free_port()}", *tail]
    pool = read_hostfile(Path(hostfile))
    if num_nodes and num_nodes > len(pool):
        raise UserError(f"--num-nodes {num_nodes} but hostfile {hostfile} lists only "
                        f"{len(pool)} host(s)")
    hosts = list(pool)[:num_nodes] if num_nodes else list(pool)
    if no_ssh and not 0 <= node_rank < len(hosts):
        raise UserError(f"--node-rank {node_rank} is outside 0..{len(hosts) - 1}, the hosts "
                        f"of {hostfile}")
    _check_hosts(hosts, hostfile, no_ssh, master_addr, ssh_port, connect_timeout)
    if len(hosts) > 1 and not no_ssh and not shutil.which("pdsh"):
        raise UserError("a multi-node launch over ssh needs pdsh, which is not installed; "
                        "install pdsh, or run `astrotransfer launch --no-ssh --node-rank R` "
                        "on every node (docs/distributed.md shows a SLURM script)")
    args = ["--hostfile", str(hostfile), "--master_port", str(master_port or DEFAULT_PORT)]
    if num_procs or num_gpus:
        args += ["--num_gpus", str(num_procs or num_gpus)]
    if num_nodes:
        args += ["--num_nodes", str(num_nodes)]
    if master_addr:
        args += ["--master_addr", master_addr]
    if no_ssh:
        args += ["--no_ssh", "--node_rank", str(node_rank)]
    if ssh_port:
        args += ["--ssh_port", str(ssh_port)]
    return False, args + ["--no_local_rank", "--module", "--log_level", "warning",
                          "astrotransfer.cli", *command]


def _check_gpus(num_gpus: int | None) -> list[int]:
    """Visible GPU ids (honouring CUDA_VISIBLE_DEVICES); refuses --num-gpus it cannot meet."""
    import torch

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if num_gpus is not None and have == 0:
        raise UserError(f"--num-gpus {num_gpus} asks for GPUs but this machine has none; "
                        f"use --num-procs {num_gpus} to run {num_gpus} CPU ranks instead")
    if num_gpus is not None and num_gpus > have:
        raise UserError(f"--num-gpus {num_gpus} asks for more GPUs than the {have} visible "
                        f"here; use --num-gpus {have} or fewer")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    ids = [int(v) for v in visible.split(",") if v.strip().isdigit()] if visible else []
    return ids[:have] if ids else list(range(have))


def _check_hosts(hosts, hostfile, no_ssh, master_addr, ssh_port, timeout) -> None:
    if no_ssh:  # each node starts its own ranks: only node 0's address must work
        checks = [(master_addr, None, "--master-addr")]
    else:
        checks = [(h, ssh_port or 22, f"hostfile {hostfile}") for h in hosts]
        if master_addr:
            checks.append((master_addr, None, "--master-addr"))
    for host, port, origin in checks:
        reason = probe_host(host, port, timeout)
        if reason:
            raise UserError(f"host '{host}' from {origin} is unreachable: {reason}; fix the "
                            f"name, the network or its sshd (--connect-timeout sets the wait)")


@contextlib.contextmanager
def _env_file_for_pdsh(value: str):
    """pdsh forwards only variables DeepSpeed reads from a `.deepspeed_env` file; write one
    that keeps the user's own entries and adds the launch options."""
    from deepspeed.launcher import runner

    lines = []
    for base in runner.DEEPSPEED_ENVIRONMENT_PATHS:
        own = Path(base).expanduser() / ".deepspeed_env"
        if own.is_file():
            lines += [ln for ln in own.read_text().splitlines() if "=" in ln]
    with tempfile.TemporaryDirectory(prefix="astrotransfer-launch-") as tmp:
        path = Path(tmp) / "deepspeed_env"
        path.write_text("\n".join(lines + [f"{ENV_OPTIONS}={value}"]) + "\n")
        saved = runner.DEEPSPEED_ENVIRONMENT_NAME
        runner.DEEPSPEED_ENVIRONMENT_NAME = str(path)
        try:
            yield
        finally:
            runner.DEEPSPEED_ENVIRONMENT_NAME = saved


def run_launcher(local: bool, args: list[str], options: dict) -> int:
    """Start the job and wait; returns the first failing rank's exit code (0 if none)."""
    if options:
        os.environ[ENV_OPTIONS] = encode_options(options)
    if local:
        child = subprocess.Popen(args)

        def forward(signum, frame):  # DeepSpeed's launcher then stops every rank
            child.send_signal(signum)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            return child.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    from deepspeed.launcher import runner

    multi = "--no_ssh" not in args
    env_ctx = _env_file_for_pdsh(os.environ[ENV_OPTIONS]) if (multi and options) \
        else contextlib.nullcontext()
    try:
        with env_ctx:
            runner.main(args)
    except SystemExit as exc:  # the runner exits with the failing rank's code
        return exc.code if isinstance(exc.code, int) else (1 if exc.code else 0)
    except (ValueError, RuntimeError, AssertionError) as exc:
        raise UserError(f"DeepSpeed launcher: {str(exc).strip().splitlines()[0]}") from None
    return 0
