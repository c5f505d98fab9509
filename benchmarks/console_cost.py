"""What the web console costs the OCPP central system (flood msg/s with and without it).

Split from ``ocpp_throughput.py`` when that became the multi-process load benchmark
(issue #13); ``ocpp_throughput.py --console`` runs this file.

The flood against megastation alone, then with the console served on the same event
loop and one console client connected (the live overview over server-sent events, plus
what the page fetches: the chart data every 15 s, and a Prometheus scrape every 15 s),
alternating ``--rounds`` times; prints the median msg/s of each and the cost (target < 5 %).
Floods against a bare echo server and paced runs are ``ocpp_throughput.py``'s.

    .venv/bin/python benchmarks/console_cost.py [-n 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- servers


def _bench_store(n: int):
    """A fresh store in a temp folder with chargers CP00000.. accepted; (store, clock)."""
    from megastation.core.clock import SystemClock
    from megastation.store import Store, records

    clock = SystemClock()
    store = Store(Path(tempfile.mkdtemp()) / "bench.db", clock)
    for i in range(n):
        records.add_pending_charger(store, f"CP{i:05d}")
        records.accept_charger(store, f"CP{i:05d}")
    return store, clock


async def serve_megastation(n: int) -> None:
    from megastation.core.config import load_station, seeds_dir
    from ocpp_central.server import CentralSystem

    store, clock = _bench_store(n)
    cs = CentralSystem(load_station(seeds_dir() / "gwangju-donggu.toml"), store, clock)
    await cs.start("127.0.0.1", 0)
    print(cs.port, flush=True)
    await asyncio.Future()


async def serve_megastation_web(n: int) -> None:
    """megastation with the console beside it; prints the OCPP port, web port, API token."""
    from megastation.core.config import load_station, seeds_dir
    from megastation.web import WebServer
    from megastation.web.auth import add_user, new_api_token
    from ocpp_central.server import CentralSystem

    store, clock = _bench_store(n)
    add_user(store, "bench", "viewer", "benchmark-password")
    token = new_api_token(store, "bench")
    station = load_station(seeds_dir() / "gwangju-donggu.toml")
    cs = CentralSystem(station, store, clock)
    await cs.start("127.0.0.1", 0)
    web = await WebServer(station, store, clock, central=cs, port=0).start()
    print(f"{cs.port} {web.port} {token}", flush=True)
    await asyncio.Future()


async def console_client(port: int, token: str, stop: asyncio.Event, seen: list[int]) -> None:
    """What one open console page asks of the server: the SSE overview stream, the
    chart data every 15 s; plus a Prometheus scrape every 15 s."""

    async def get(path: str) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await r.read()
        w.close()

    async def events() -> None:
        # an overview of 1,000 chargers is a line of ~250 kB
        r, w = await asyncio.open_connection("127.0.0.1", port, limit=2**24)
        w.write(
            f"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        )
        try:
            while line := await r.readline():
                if line.startswith(b"event: overview"):
                    seen[0] += 1
        finally:
            w.close()

    sse = asyncio.create_task(events())
    try:
        while not stop.is_set():
            await asyncio.gather(get("/api/v1/flows"), get("/metrics"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 15.0)
    finally:
        sse.cancel()
        await asyncio.gather(sse, return_exceptions=True)


def run_console(n: int, seconds: float, with_console: bool) -> dict:
    """One flood run against megastation, with or without the console and its client."""
    if not with_console:
        return run("megastation", n, seconds)
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", "megastation-web", "-n", str(n)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    ocpp_port, web_port, token = proc.stdout.readline().split()

    async def both() -> dict:
        stop, seen = asyncio.Event(), [0]
        client = asyncio.create_task(console_client(int(web_port), token, stop, seen))
        try:
            r = await load(int(ocpp_port), n, seconds)
        finally:
            stop.set()
            await asyncio.gather(client, return_exceptions=True)
        return {**r, "overviews": seen[0]}

    try:
        return asyncio.run(both())
    finally:
        proc.terminate()
        proc.wait()


def console_cost(n: int, seconds: float, rounds: int) -> None:
    print(f"{os.cpu_count()} CPUs, {n} connections, {seconds:g} s per run, {rounds} rounds")
    alone, served = [], []
    for i in range(rounds):
        a = run_console(n, seconds, False)
        b = run_console(n, seconds, True)
        alone.append(a["messages_per_s"])
        served.append(b["messages_per_s"])
        print(
            f"round {i + 1}: alone {a['messages_per_s']:7.0f} msg/s   with console "
            f"{b['messages_per_s']:7.0f} msg/s ({b['overviews']} overviews pushed)"
        )
    m_a, m_b = statistics.median(alone), statistics.median(served)
    print(
        f"median: alone {m_a:.0f} msg/s, with one console client {m_b:.0f} msg/s: "
        f"cost {100 * (1 - m_b / m_a):.1f} %  (target < 5 %)"
    )


def start_server(kind: str, n: int) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "-n", str(n)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    port = int(proc.stdout.readline())
    return proc, port


# --------------------------------------------------------------------------- load


def meter_values(uid: int, t: datetime, energy_wh: float) -> str:
    ts = t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return json.dumps(
        [
            2,
            str(uid),
            "MeterValues",
            {
                "connectorId": 1,
                "meterValue": [
                    {
                        "timestamp": ts,
                        "sampledValue": [
                            {
                                "value": f"{energy_wh:.1f}",
                                "measurand": "Energy.Active.Import.Register",
                                "unit": "Wh",
                            },
                            {"value": "7000.0", "measurand": "Power.Active.Import", "unit": "W"},
                        ],
                    }
                ],
            },
        ],
        separators=(",", ":"),
    )


async def charger(
    port: int,
    i: int,
    latencies: list[float],
    started: asyncio.Event,
    counts: list[int],
) -> None:
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/ocpp/CP{i:05d}",
        subprotocols=["ocpp1.6"],
        ping_interval=None,
        open_timeout=60,
    )
    t = datetime(2026, 6, 15, tzinfo=UTC) + timedelta(seconds=i)
    seq, energy = 0, 0.0
    await started.wait()
    try:
        while True:
            seq += 1
            energy += 19.4
            t += timedelta(seconds=10)
            frame = meter_values(seq, t, energy)
            t0 = time.perf_counter()
            await ws.send(frame)
            await ws.recv()
            latencies.append(time.perf_counter() - t0)
            counts[0] += 1
    except websockets.ConnectionClosed:
        pass
    finally:
        await ws.close()


async def load(port: int, n: int, seconds: float) -> dict:
    """Every connection sends MeterValues back to back (a flood) for ``seconds``."""
    latencies: list[float] = []
    counts = [0]
    started = asyncio.Event()
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(charger(port, i, latencies, started, counts)))
        if i % 100 == 99:
            await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # connections open
    started.set()
    await asyncio.sleep(1.0)  # warm-up
    latencies.clear()
    c0 = counts[0]
    await asyncio.sleep(seconds)
    c1 = counts[0]
    lat = sorted(latencies)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "messages_per_s": (c1 - c0) / seconds,
        "p50_ms": 1000 * statistics.median(lat) if lat else float("nan"),
        "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))] if lat else float("nan"),
        "samples": len(lat),
    }


def run(kind: str, n: int, seconds: float) -> dict:
    proc, port = start_server(kind, n)
    try:
        return asyncio.run(load(port, n, seconds))
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="charger connections")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    ap.add_argument("--console", action="store_true", help="(the default; kept for old calls)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs each")
    ap.add_argument("--serve", choices=["megastation", "megastation-web"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve == "megastation-web":
        asyncio.run(serve_megastation_web(args.n))
        return
    if args.serve == "megastation":
        asyncio.run(serve_megastation(args.n))
        return
    console_cost(args.n, args.seconds, args.rounds)


if __name__ == "__main__":
    main()
