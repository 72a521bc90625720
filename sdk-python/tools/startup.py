#!/usr/bin/env python3
"""Times parrot's echo run once through the file protocol, per virtual environment.

    python3 sdk-python/tools/startup.py --runs 20 .venv-sdk .venv

Each argument is a virtual environment whose ``bin`` goes first on PATH, so
that parrot's ``#!/usr/bin/env python3`` runs that environment's
interpreter with the SDK installed there. Runs alternate between the
environments so that load on the machine affects them alike. Prints the
mean and median wall time of a run (fork, exec, interpreter start-up,
imports, request read, reply written, exit) for each; with ``--json``,
one JSON document instead (``make bench`` reads it):
``{"runs": N, "envs": [{"venv", "packages", "mean_ms", "median_ms", "min_ms"}]}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PARROT = REPO / "testdata" / "agents" / "parrot" / "parrot"
RPC = "io.choria.mcorpc.external.v1.rpc_request"


def once(venv: Path, tmp: Path) -> float:
    request, reply, facts = tmp / "request", tmp / "reply", tmp / "facts"
    request.write_text(json.dumps({
        "$schema": "https://choria.io/schemas/mcorpc/external/v1/rpc_request.json",
        "protocol": RPC, "agent": "parrot", "action": "echo",
        "requestid": "3e1c5d0a8b1f5ad2a0c6f1d8e7b4a912", "senderid": "client1.example.net",
        "callerid": "choria=rip.mcollective", "collective": "mcollective",
        "ttl": 60, "msgtime": 1718444508, "data": {"message": "hello"},
    }))
    reply.write_text("")
    facts.write_text("{}")
    env = {
        "CHORIA_EXTERNAL_REQUEST": str(request), "CHORIA_EXTERNAL_REPLY": str(reply),
        "CHORIA_EXTERNAL_PROTOCOL": RPC, "CHORIA_EXTERNAL_CONFIG": str(tmp / "plugin.d" / "parrot"),
        "CHORIA_EXTERNAL_FACTS": str(facts),
        "PATH": str(venv.resolve() / "bin") + os.pathsep + os.environ.get("PATH", ""),
    }
    start = time.perf_counter()
    subprocess.run([str(PARROT), str(request), str(reply), RPC], env=env, cwd=str(tmp),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    took = time.perf_counter() - start
    got = json.loads(reply.read_text())
    if got != {"statuscode": 0, "statusmsg": "", "data": {"message": "hello"}}:
        raise SystemExit("%s: unexpected reply %r" % (venv, got))
    return took


def packages(venv: Path) -> str:
    """What provides mco_agent in the environment, say "agent-host-sdk 0.1.0"."""
    out = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "json",
                          "--disable-pip-version-check"], capture_output=True, text=True)
    try:
        listed = {p["name"].lower(): p["version"] for p in json.loads(out.stdout)}
    except ValueError:
        return "unknown"
    names = [n for n in ("agent-host-sdk", "py-mco-agent", "py-choria-external") if n in listed]
    if "py-mco-agent" in listed and "jsonschema" in listed:  # what it imports on every start
        names.append("jsonschema")
    return ", ".join("%s %s" % (n, listed[n]) for n in names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("venvs", nargs="+", type=Path)
    args = ap.parse_args()
    times: dict = {v: [] for v in args.venvs}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for v in args.venvs:  # warm the page cache and .pyc files
            once(v, tmp)
        for _ in range(args.runs):
            for v in args.venvs:
                times[v].append(once(v, tmp))
    if args.json:
        print(json.dumps({"runs": args.runs, "envs": [
            {"venv": str(v), "packages": packages(v), "mean_ms": 1000 * statistics.mean(t),
             "median_ms": 1000 * statistics.median(t), "min_ms": 1000 * min(t)} for v, t in times.items()]}))
        return
    for v, t in times.items():
        print("%-12s runs %d  mean %6.1f ms  median %6.1f ms  min %6.1f ms" % (
            v, len(t), 1000 * statistics.mean(t), 1000 * statistics.median(t), 1000 * min(t)))


if __name__ == "__main__":
    main()
