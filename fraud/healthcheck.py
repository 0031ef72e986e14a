"""Container health checks without curl: ``python -m fraud.healthcheck [...]``.

The images have no curl or wget (nothing in them that is not needed to run);
this module is the image's ``HEALTHCHECK`` and the exec probes' command. It
imports only the standard library, so a check costs tens of milliseconds.

- ``--url URL``: GET it; healthy on HTTP 200 (``/healthz`` answers 503 while
  a scorer holds, ``/metrics`` 200 while its process serves).
- ``--tcp HOST:PORT[,HOST:PORT]``: one of them accepts a connection;
  ``--broker``: the same for ``FRAUD_BOOTSTRAP_SERVERS`` (the readiness of
  workers that have no HTTP endpoint).
- ``--process``: PID 1 is running, not a zombie or stopped (the liveness of a
  worker without an HTTP endpoint).
- none of these: ``FRAUD_HEALTHCHECK_URL`` if set, else
  ``http://127.0.0.1:$FRAUD_METRICS_PORT/healthz`` if that is set, else
  ``--process``.

Exit status 0 when healthy, 1 when not, with one line saying why.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path


def check_url(url: str, timeout: float) -> tuple[bool, str]:
    """GET ``url``: healthy on 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200, f"{url}: HTTP {response.status}"
    except urllib.error.HTTPError as err:  # /healthz says why in its body
        body = err.read(500).decode("utf-8", "replace").strip()
        return False, f"{url}: HTTP {err.code} {body}".strip()
    except (urllib.error.URLError, OSError) as err:
        return False, f"{url}: {err}"


def check_tcp(addresses: str, timeout: float) -> tuple[bool, str]:
    """Whether any of ``HOST:PORT[,HOST:PORT]`` accepts a TCP connection."""
    errors = []
    for address in (a.strip() for a in addresses.split(",") if a.strip()):
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout):
                return True, f"{address}: connected"
        except (OSError, ValueError) as err:
            errors.append(f"{address}: {err}")
    return False, "; ".join(errors) or "no address given"


def check_process(proc: Path = Path("/proc")) -> tuple[bool, str]:
    """PID 1 is alive and neither a zombie nor stopped."""
    try:
        status = (proc / "1" / "status").read_text()
    except OSError as err:
        return False, f"cannot read PID 1's status: {err}"
    state = next((line.split(":", 1)[1].strip() for line in status.splitlines()
                  if line.startswith("State:")), "?")
    return state[:1] not in ("Z", "T", "X", "?"), f"PID 1 state {state}"


def default_url() -> str | None:
    """The URL the environment names, if any."""
    if url := os.environ.get("FRAUD_HEALTHCHECK_URL"):
        return url
    if port := os.environ.get("FRAUD_METRICS_PORT"):
        return f"http://127.0.0.1:{port}/healthz"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run one check; print why; 0 when healthy."""
    parser = argparse.ArgumentParser(prog="python -m fraud.healthcheck", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--url", help="GET this URL; healthy on HTTP 200")
    group.add_argument("--tcp", metavar="HOST:PORT[,...]", help="one of these accepts TCP")
    group.add_argument("--broker", action="store_true",
                       help="one of FRAUD_BOOTSTRAP_SERVERS accepts TCP")
    group.add_argument("--process", action="store_true", help="PID 1 is running")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    args = parser.parse_args(argv)
    url = args.url or (None if args.tcp or args.broker or args.process else default_url())
    if url:
        healthy, why = check_url(url, args.timeout)
    elif args.tcp or args.broker:
        addresses = args.tcp or os.environ.get("FRAUD_BOOTSTRAP_SERVERS", "")
        healthy, why = check_tcp(addresses, args.timeout)
    else:
        healthy, why = check_process()
    print(("healthy: " if healthy else "unhealthy: ") + why, file=sys.stdout if healthy
          else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
