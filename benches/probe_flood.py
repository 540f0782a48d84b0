#!/usr/bin/env python3
"""Hostile clients against a probe endpoint, and what they cost the server.

The figures of BENCHMARKS.md "Probe endpoint under hostile clients" (issues 16 and 19):

    python3 benches/probe_flood.py PID HOST:PORT slowloris [CONNECTIONS] [SECONDS]
    python3 benches/probe_flood.py PID HOST:PORT idle      [CONNECTIONS] [SECONDS]
    python3 benches/probe_flood.py PID HOST:PORT headers   [CONNECTIONS] [KIB]
    python3 benches/probe_flood.py PID HOST:PORT echo      [KIB]

PID is the server's process: its open file descriptors (/proc/PID/fd) and its memory
(VmRSS, VmHWM of /proc/PID/status) are read before, during and after each flood.
Standard library only; the client needs `ulimit -n` above CONNECTIONS.
"""

import asyncio
import os
import sys
import time


def figures(pid):
    """(open fds, VmRSS MB, VmHWM MB) of `pid`."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    status = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            status[key] = value.strip()
    mb = lambda key: int(status[key].split()[0]) / 1024
    return fds, mb("VmRSS"), mb("VmHWM")


def show(label, pid):
    fds, rss, hwm = figures(pid)
    print(f"{label}: fds={fds} rss_mb={rss:.1f} hwm_mb={hwm:.1f}", flush=True)


async def connect(host, port):
    return await asyncio.open_connection(host, port)


async def wait_closed(reader, deadline):
    """Seconds until the server closed the connection, or None if it held it."""
    began = time.monotonic()
    try:
        while time.monotonic() < deadline:
            data = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
            if not data:
                return time.monotonic() - began
    except asyncio.TimeoutError:
        return None
    except ConnectionError:
        return time.monotonic() - began
    return None


async def slowloris(pid, host, port, connections, seconds):
    """Each connection sends one header byte per second; who closes them, and when."""
    show("before", pid)
    began = time.monotonic()
    deadline = began + seconds
    closed_at = []

    async def one():
        try:
            reader, writer = await connect(host, port)
        except OSError:
            closed_at.append(0.0)
            return
        header = b"GET /livez HTTP/1.1\r\nX-Slow: " + b"a" * 10_000
        reading = asyncio.ensure_future(wait_closed(reader, deadline))
        for byte in header:
            if reading.done() or time.monotonic() >= deadline:
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.sleep(1)
        closed = await reading
        if closed is not None:
            closed_at.append(time.monotonic() - began)
        writer.close()

    tasks = [asyncio.ensure_future(one()) for _ in range(connections)]
    await asyncio.sleep(min(3, seconds / 2))
    show("during", pid)
    await asyncio.gather(*tasks)
    held = connections - len(closed_at)
    latest = max(closed_at) if closed_at else float("nan")
    print(
        f"slowloris: connections={connections} closed_by_server={len(closed_at)} "
        f"held_{seconds}s={held} latest_close_s={latest:.1f}",
        flush=True,
    )
    show("after", pid)


async def idle(pid, host, port, connections, seconds):
    """Opens idle connections (nothing sent) and holds them for `seconds`."""
    show("before", pid)
    writers = []
    refused = 0
    for _ in range(connections):
        try:
            writers.append(await connect(host, port))
        except OSError:
            refused += 1
    await asyncio.sleep(0.5)
    show(f"{connections} idle open", pid)
    # A probe beside them: does /livez still answer?
    try:
        reader, writer = await asyncio.wait_for(connect(host, port), 5)
        writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(100), 5)
        line = answer.split(b"\r\n")[0].decode() or "closed"
        print(f"livez beside them: {line}")
        writer.close()
    except (OSError, asyncio.TimeoutError) as error:
        print(f"livez beside them: {error!r}")
    await asyncio.sleep(max(0, seconds - 0.5))
    alive = 0
    for reader, writer in writers:
        # A connection the server closed reads EOF at once.
        try:
            data = await asyncio.wait_for(reader.read(1), 0.001)
            alive += 0 if not data else 1
        except asyncio.TimeoutError:
            alive += 1
        except ConnectionError:
            pass
    print(f"idle: opened={len(writers)} refused={refused} still_open_after_{seconds}s={alive}")
    show(f"after {seconds} s", pid)
    for _, writer in writers:
        writer.close()
    await asyncio.sleep(1)
    show("1 s after closing them", pid)


async def headers(pid, host, port, connections, kib):
    """Each connection sends `kib` KiB of a header that never ends, then holds."""
    show("before", pid)
    chunk = b"a" * 16384
    sent = []

    async def one():
        try:
            reader, writer = await connect(host, port)
        except OSError:
            sent.append(0)
            return None
        total = 0
        writer.write(b"GET /livez HTTP/1.1\r\nX-Flood: ")
        try:
            while total < kib * 1024:
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), 5)
                total += len(chunk)
        except (ConnectionError, asyncio.TimeoutError):
            pass
        sent.append(total)
        return writer

    began = time.monotonic()
    writers = await asyncio.gather(*[one() for _ in range(connections)])
    print(f"sent in {time.monotonic() - began:.1f} s: {sum(sent) / 2**20:.0f} MiB in total")
    show("flood open", pid)
    await asyncio.sleep(3)
    show("3 s later", pid)
    for writer in writers:
        if writer is not None:
            writer.close()
    await asyncio.sleep(10)
    show("10 s after closing", pid)


async def echo(pid, host, port, kib):
    """A `?service=` of `kib` KiB: how much of it the 404 body echoes."""
    reader, writer = await connect(host, port)
    name = "x" * (kib * 1024)
    writer.write(f"GET /health?service={name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), 10)
    head, _, body = answer.partition(b"\r\n\r\n")
    status = head.split(b"\r\n")[0].decode()
    print(f"echo: request_kib={kib} status={status} body_bytes={len(body)}")
    print(f"headers: {head.decode(errors='replace').splitlines()[1:]}")


def main():
    pid, address, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    host, port = address.rsplit(":", 1)
    args = [int(a) for a in sys.argv[4:]]
    if mode == "slowloris":
        run = slowloris(pid, host, port, *(args or [600, 45]))
    elif mode == "idle":
        run = idle(pid, host, port, *(args or [5000, 10]))
    elif mode == "headers":
        run = headers(pid, host, port, *(args or [2000, 380]))
    elif mode == "echo":
        run = echo(pid, host, port, *(args or [60]))
    else:
        sys.exit(__doc__)
    asyncio.run(run)


if __name__ == "__main__":
    main()
