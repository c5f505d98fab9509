"""OCPP throughput of megastation's central system, with the load spread over processes.

The server runs in its own process; ``--procs`` load processes share the charger
connections (OCPP 1.6 MeterValues, one outstanding CALL per connection as OCPP requires),
so one load process is not what limits. CPU time of the server and of the load processes
over the measured window is read from /proc, to tell which side limits.

1. paced: ``--chargers`` (10,000) chargers at one MeterValues per ``--interval`` (10 s);
   p50 / p99 round trip (target p99 < 100 ms).
2. storm: ``--storm`` (2,000) chargers sending every ``--storm-interval`` s drop their
   connections at the same instant and reconnect at once, re-sending the message that
   was unanswered at the drop (chargers queue and replay): time until every one is back
   (reconnected and its first CALL answered); messages lost = messages the chargers made
   minus energy samples stored (target 0).
3. ``--flood``: the old comparison with a bare websockets echo server (msg/s ratio).
4. ``--profile``: the paced run again with the server under cProfile; top functions.
5. ``--console``: what the web console costs (runs ``console_cost.py --console``).

    .venv/bin/python benchmarks/ocpp_throughput.py [--chargers 10000] [--storm 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 6, 15, tzinfo=UTC)


# --------------------------------------------------------------------------- servers


async def serve_echo() -> None:
    async def handler(ws):
        try:
            async for frame in ws:
                msg = json.loads(frame)
                await ws.send(json.dumps([3, msg[1], {}]))
        except websockets.ConnectionClosed:
            pass

    async with websockets.serve(
        handler, "127.0.0.1", 0, subprotocols=["ocpp1.6"], ping_interval=None, max_queue=None
    ) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()


async def serve_megastation(n: int, profile: str | None) -> None:
    from megastation.core.clock import SystemClock
    from megastation.core.config import load_station, seeds_dir
    from megastation.store import Store, records
    from ocpp_central.server import CentralSystem

    clock = SystemClock()
    db = Path(tempfile.mkdtemp()) / "bench.db"
    store = Store(db, clock)
    with store.conn:  # n chargers, accepted (one transaction: seconds, not minutes)
        store.conn.executemany(
            "INSERT INTO chargers (id, registration, source, registered_at) "
            "VALUES (?, 'Accepted', 'auto', '2026-06-15T00:00:00+00:00')",
            [(f"CP{i:05d}",) for i in range(n)],
        )
    records.forget_caches(store)
    cs = CentralSystem(load_station(seeds_dir() / "gwangju-donggu.toml"), store, clock)
    await cs.start("127.0.0.1", 0)
    prof = cProfile.Profile(time.process_time) if profile else None  # CPU, not wall time
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: prof and prof.enable())
    print(cs.port, db, flush=True)
    await stop.wait()
    if prof is not None:
        prof.disable()
        prof.dump_stats(profile)
    await cs.close()


def start_server(kind: str, n: int, profile: str | None = None):
    args = [sys.executable, __file__, "--serve", kind, "-n", str(n)]
    if profile:
        args += ["--profile-out", profile]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, cwd=ROOT, text=True)
    first = proc.stdout.readline().split()
    return proc, int(first[0]), (first[1] if len(first) > 1 else None)


def run_delay_s(pid: int) -> float:
    """Seconds the process (all its threads) waited runnable for a CPU (schedstat)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            total += int(f.read().split()[1])
    return total / 1e9


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (and its reaped children)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(x) for x in fields[11:15]) / ticks


# --------------------------------------------------------------------------- load (worker side)


def meter_values(uid: str, t: datetime, energy_wh: float) -> str:
    ts = t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return json.dumps(
        [2, uid, "MeterValues", {"connectorId": 1, "meterValue": [{"timestamp": ts,
            "sampledValue": [
                {"value": f"{energy_wh:.1f}", "measurand": "Energy.Active.Import.Register",
                 "unit": "Wh"},
                {"value": "7000.0", "measurand": "Power.Active.Import", "unit": "W"}]}]}],
        separators=(",", ":"),
    )  # fmt: skip


async def _connect(port: int, i: int):
    delay = 0.05
    while True:
        try:
            return await websockets.connect(
                f"ws://127.0.0.1:{port}/ocpp/CP{i:05d}", subprotocols=["ocpp1.6"],
                ping_interval=None, open_timeout=120, compression=None,
            )  # fmt: skip
        except (OSError, websockets.InvalidHandshake, TimeoutError):
            await asyncio.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 2.0)


async def _ask(ws, frame: str, uid: str, timeout_s: float = 60) -> None:
    await ws.send(frame)
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
        if msg[0] in (3, 4) and msg[1] == uid:
            return
        if msg[0] == 2:  # a call from the server: not expected here
            await ws.send(json.dumps([4, msg[1], "NotImplemented", "", {}]))


async def worker(a: argparse.Namespace) -> dict:
    """One load process: chargers ``first .. first+count-1``; results as a dict."""
    lat: list[float] = []
    made = 0  # distinct MeterValues made (each one answered before the next)
    back_s: list[float] = []
    failures = 0

    connected = [0]
    all_connected = asyncio.Event()
    go = asyncio.Event()

    async def one(i: int) -> None:
        nonlocal made, failures
        ws = await _connect(a.port, i)
        connected[0] += 1
        if connected[0] == a.count:
            all_connected.set()
        await go.wait()  # the measured window starts once every charger is connected
        t = T0 + timedelta(seconds=i)
        seq, energy = 0, 0.0
        await asyncio.sleep(max(0.0, a.go_at - time.time()) + random.random() * a.interval)
        dropped = a.drop_at is None
        try:
            while time.time() < a.end_at:
                seq += 1
                energy += 19.4
                t += timedelta(seconds=10)
                uid = f"{i}-{seq}"
                frame = meter_values(uid, t, energy)
                made += 1
                while True:  # until answered (a charger replays after reconnecting)
                    if not dropped and time.time() >= a.drop_at:
                        dropped = True
                        ws.transport.abort()  # the storm: every charger at once
                        drop = a.drop_at
                        await asyncio.sleep(max(0.0, drop - time.time()))
                        ws = await _connect(a.port, i)
                        t_send = time.perf_counter()
                        await _ask(ws, frame, uid)
                        back_s.append(time.time() - drop)
                        break
                    t_send = time.perf_counter()
                    try:
                        await _ask(ws, frame, uid)
                    except (websockets.ConnectionClosed, TimeoutError):
                        failures += 1
                        ws = await _connect(a.port, i)
                        continue
                    if a.go_at <= time.time() <= a.end_at:
                        lat.append(time.perf_counter() - t_send)
                    break
                wait = a.interval
                if not dropped:  # wake up at the drop, as a network cut would
                    wait = min(wait, max(0.0, a.drop_at - time.time()))
                await asyncio.sleep(wait)
        finally:
            with contextlib.suppress(Exception):
                await ws.close()

    tasks = []
    for k in range(a.count):
        tasks.append(asyncio.create_task(one(a.first + k)))
        if k % 50 == 49:
            await asyncio.sleep(0.02)
    await all_connected.wait()
    print("ready", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    a.go_at, a.end_at, drop_at = (float(x) for x in line.split())
    a.drop_at = drop_at if drop_at >= 0 else None
    go.set()
    await asyncio.gather(*tasks)
    return {"lat": lat, "made": made, "back_s": back_s, "failures": failures}


def start_workers(port, n, procs, interval):
    """Start the load processes; return once every charger of every one is connected."""
    per = -(-n // procs)
    out = []
    for p in range(procs):
        first, count = p * per, min(per, n - p * per)
        if count <= 0:
            break
        args = [sys.executable, __file__, "--worker", "--port", str(port), "--first",
                str(first), "--count", str(count), "--interval", str(interval)]  # fmt: skip
        out.append(
            subprocess.Popen(
                args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, text=True
            )
        )
    for w in out:
        assert w.stdout.readline().strip() == "ready"
    return out


def go(workers, go_at: float, end_at: float, drop_at: float | None = None) -> None:
    for w in workers:
        w.stdin.write(f"{go_at} {end_at} {-1 if drop_at is None else drop_at}\n")
        w.stdin.flush()


def collect(workers) -> dict:
    res = {"lat": [], "made": 0, "back_s": [], "failures": 0}
    for w in workers:
        out = w.stdout.read()
        w.wait()
        r = json.loads(out.strip().splitlines()[-1])
        for k in res:
            res[k] += r[k]
    return res


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1)))] if xs else float("nan")


# --------------------------------------------------------------------------- scenarios


def paced(
    n: int,
    procs: int,
    interval: float,
    seconds: float,
    profile: str | None = None,
    kind: str = "megastation",
) -> dict:
    server, port, db = start_server(kind, n, profile)
    try:
        t_connect = time.time()
        workers = start_workers(port, n, procs, interval)
        connect_s = time.time() - t_connect
        go_at = time.time() + 3.0  # the server settles
        end_at = go_at + seconds
        go(workers, go_at, end_at)
        time.sleep(max(0.0, go_at - time.time()))
        if profile:
            server.send_signal(signal.SIGUSR1)
        c0 = {w.pid: cpu_s(w.pid) for w in workers} | {server.pid: cpu_s(server.pid)}
        d0 = run_delay_s(server.pid)
        load0 = os.getloadavg()[0]
        time.sleep(max(0.0, end_at - time.time()))
        c1 = {w.pid: cpu_s(w.pid) for w in workers} | {server.pid: cpu_s(server.pid)}
        d1 = run_delay_s(server.pid)
        res = collect(workers)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    lat = res["lat"]
    return {
        "messages_per_s": len(lat) / seconds,
        "p50_ms": 1000 * statistics.median(lat) if lat else float("nan"),
        "p99_ms": 1000 * pct(lat, 0.99),
        "max_ms": 1000 * max(lat) if lat else float("nan"),
        "samples": len(lat),
        "server_cpu": (c1[server.pid] - c0[server.pid]) / seconds,
        "server_cpu_per_msg_ms": 1000 * (c1[server.pid] - c0[server.pid]) / max(1, len(lat)),
        "server_waiting": (d1 - d0) / seconds,  # runnable, but no CPU given
        "load_cpu": sum(c1[w.pid] - c0[w.pid] for w in workers) / seconds,
        "loadavg": load0,
        "reconnects": res["failures"],
        "connect_s": connect_s,
        "db": db,
    }


def storm(n: int, procs: int, interval: float) -> dict:
    server, port, db = start_server("megastation", n)
    try:
        workers = start_workers(port, n, procs, interval)
        go_at = time.time() + 2.0
        drop_at = go_at + 2 * interval
        end_at = drop_at + 3 * interval
        go(workers, go_at, end_at, drop_at)
        res = collect(workers)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        stored = conn.execute(
            "SELECT COUNT(*) FROM meter_samples WHERE measurand = 'Energy.Active.Import.Register'"
        ).fetchone()[0]
    back = res["back_s"]
    return {
        "chargers": n,
        "back": len(back),
        "all_back_s": max(back) if back else float("nan"),
        "p50_back_s": statistics.median(back) if back else float("nan"),
        "made": res["made"],
        "stored": stored,
        "lost": res["made"] - stored,
    }


def flood(n: int, seconds: float) -> None:
    """The old single-process comparison against a bare echo server (messages/s)."""

    async def run_flood(port: int) -> float:
        counts = [0]
        stop = time.time() + seconds + 2

        async def one(i: int) -> None:
            ws = await _connect(port, i)
            seq = 0
            while time.time() < stop:
                seq += 1
                await _ask(
                    ws, meter_values(f"{i}-{seq}", T0 + timedelta(seconds=seq), seq), f"{i}-{seq}"
                )
                counts[0] += 1
            await ws.close()

        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        await asyncio.sleep(2)
        c0 = counts[0]
        await asyncio.sleep(seconds)
        rate = (counts[0] - c0) / seconds
        await asyncio.gather(*tasks, return_exceptions=True)
        return rate

    rates = {}
    for kind in ("echo", "megastation"):
        proc, port, _ = start_server(kind, n)
        try:
            rates[kind] = asyncio.run(run_flood(port))
        finally:
            proc.terminate()
            proc.wait()
    print(
        f"flood   {n} connections: echo {rates['echo']:.0f} msg/s, megastation "
        f"{rates['megastation']:.0f} msg/s, ratio {rates['megastation'] / rates['echo']:.2f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chargers", type=int, default=10_000, help="paced run: chargers")
    ap.add_argument("--interval", type=float, default=10.0, help="paced run: s between messages")
    ap.add_argument("--seconds", type=float, default=30.0, help="paced run: measured seconds")
    ap.add_argument("--procs", type=int, default=3, help="load processes")
    ap.add_argument("--storm", type=int, default=2_000, help="reconnect storm: chargers (0: skip)")
    ap.add_argument("--storm-interval", type=float, default=5.0, help="storm: s between messages")
    ap.add_argument("--flood", type=int, default=0, help="flood comparison: connections (0: skip)")
    ap.add_argument("--profile", action="store_true", help="also profile the server (paced)")
    ap.add_argument("--baseline", action="store_true", help="paced load on a bare echo server too")
    ap.add_argument("--console", action="store_true", help="the web console's cost instead")
    ap.add_argument("--rounds", type=int, default=3, help="--console: alternating runs each")
    # internal: server and worker processes
    ap.add_argument("--serve", choices=["echo", "megastation"], help=argparse.SUPPRESS)
    ap.add_argument("-n", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--profile-out", help=argparse.SUPPRESS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for name in ("--port", "--first", "--count"):
        ap.add_argument(name, type=int, help=argparse.SUPPRESS)
    for name in ("--go-at", "--end-at", "--drop-at"):
        ap.add_argument(name, type=float, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve == "echo":
        asyncio.run(serve_echo())
        return
    if a.serve == "megastation":
        asyncio.run(serve_megastation(a.n, a.profile_out))
        return
    if a.worker:
        print(json.dumps(asyncio.run(worker(a))), flush=True)
        return
    if a.console:
        n = a.n or 1000
        cmd = [sys.executable, str(Path(__file__).with_name("console_cost.py")), "--console",
               "-n", str(n), "--rounds", str(a.rounds)]  # fmt: skip
        raise SystemExit(subprocess.call(cmd, cwd=ROOT))

    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} before the runs; "
        f"{a.procs} load processes"
    )
    if a.chargers:
        r = paced(a.chargers, a.procs, a.interval, a.seconds)
        print(
            f"paced   {a.chargers} chargers x 1 msg / {a.interval:g} s: "
            f"{r['messages_per_s']:.0f} msg/s  p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  "
            f"max {r['max_ms']:.0f} ms  ({r['samples']} samples; target p99 < 100 ms)"
        )
        print(
            f"        CPU over the window: server {100 * r['server_cpu']:.0f} % of a core "
            f"({r['server_cpu_per_msg_ms']:.2f} ms CPU per message), waiting for a CPU while "
            f"runnable {100 * r['server_waiting']:.0f} % of the time; load processes "
            f"{100 * r['load_cpu']:.0f} % in all; load average {r['loadavg']:.1f}; "
            f"reconnects {r['reconnects']}; all {a.chargers} connected in {r['connect_s']:.0f} s"
        )
    if a.baseline and a.chargers:
        r = paced(a.chargers, a.procs, a.interval, a.seconds, kind="echo")
        print(
            f"echo    the same load on a bare websockets echo server: p50 {r['p50_ms']:.1f} ms  "
            f"p99 {r['p99_ms']:.1f} ms; server {100 * r['server_cpu']:.0f} % of a core, waiting "
            f"for a CPU {100 * r['server_waiting']:.0f} % of the time"
        )
    if a.storm:
        s = storm(a.storm, a.procs, a.storm_interval)
        print(
            f"storm   {s['chargers']} chargers drop and reconnect at once: {s['back']} back, all "
            f"within {s['all_back_s']:.1f} s (median {s['p50_back_s']:.1f} s); messages made "
            f"{s['made']}, stored {s['stored']}, lost {s['lost']} (target 0)"
        )
    if a.flood:
        flood(a.flood, 10.0)
    if a.profile:
        prof = Path(tempfile.mkdtemp()) / "server.prof"
        r = paced(a.chargers, a.procs, a.interval, a.seconds, str(prof))
        print(f"profile (paced, under cProfile: p99 {r['p99_ms']:.1f} ms); server top functions:")
        pstats.Stats(str(prof)).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
