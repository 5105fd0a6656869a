"""The baselines of the RPC benchmark, each a server and a client with the same workload.

    python -m benchmarks.rpc_baselines asyncio-server PORT
    python -m benchmarks.rpc_baselines asyncio-client PORT N SIZE WINDOW
    python -m benchmarks.rpc_baselines grpc-server PORT
    python -m benchmarks.rpc_baselines grpc-client PORT N SIZE WINDOW MODE   (unary | stream)

A client prints one JSON line: {"seconds", "latencies"} (latencies only for ping-pong).
The asyncio pair is the "failure-sensitive code with a good strategy" baseline: length-prefixed
msgpack frames, pipelined writes, no durability.
"""

from __future__ import annotations

import asyncio
import json
import struct
import sys
import time
from typing import Any

import msgpack

_LEN = struct.Struct("<I")


# -- asyncio -------------------------------------------------------------------------------


async def asyncio_server(port: int) -> None:
    state = {"count": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(4)
                body = await reader.readexactly(_LEN.unpack(head)[0])
                _n, _payload = msgpack.unpackb(body)
                state["count"] += 1
                reply = msgpack.packb(state["count"])
                writer.write(_LEN.pack(len(reply)) + reply)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


async def asyncio_client(port: int, n: int, size: int, window: int) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = b"x" * size
    in_flight = asyncio.Semaphore(window)
    latencies: list[float] = []
    done = asyncio.Event()
    received = 0

    async def read_replies() -> None:
        nonlocal received
        while received < n:
            head = await reader.readexactly(4)
            await reader.readexactly(_LEN.unpack(head)[0])
            received += 1
            in_flight.release()
        done.set()

    started = time.perf_counter()
    task = asyncio.create_task(read_replies())
    for i in range(n):
        await in_flight.acquire()
        body = msgpack.packb([i, payload])
        t = time.perf_counter()
        writer.write(_LEN.pack(len(body)) + body)
        if window == 1:
            await writer.drain()
            while received <= i:
                await asyncio.sleep(0)
            latencies.append(time.perf_counter() - t)
        elif i % 64 == 0:
            await writer.drain()
    await done.wait()
    elapsed = time.perf_counter() - started
    task.cancel()
    writer.close()
    return {"seconds": elapsed, "latencies": latencies}


# -- gRPC ----------------------------------------------------------------------------------


async def grpc_server(port: int) -> None:
    import grpc

    state = {"count": 0}

    async def unary(request: bytes, context: Any) -> bytes:
        state["count"] += 1
        return msgpack.packb(state["count"])

    async def stream(requests: Any, context: Any) -> Any:
        async for _request in requests:
            state["count"] += 1
            yield msgpack.packb(state["count"])

    handlers = grpc.method_handlers_generic_handler(
        "bench.Sink",
        {
            "Add": grpc.unary_unary_rpc_method_handler(unary),
            "AddStream": grpc.stream_stream_rpc_method_handler(stream),
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handlers,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


async def grpc_client(port: int, n: int, size: int, window: int, mode: str) -> dict[str, Any]:
    import grpc

    payload = b"x" * size
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        add = channel.unary_unary("/bench.Sink/Add")
        await add(msgpack.packb([0, payload]))
        started = time.perf_counter()
        if mode == "stream":
            call = channel.stream_stream("/bench.Sink/AddStream")(
                msgpack.packb([i, payload]) for i in range(n)
            )
            async for _reply in call:
                pass
        elif window == 1:
            for i in range(n):
                t = time.perf_counter()
                await add(msgpack.packb([i, payload]))
                latencies.append(time.perf_counter() - t)
        else:
            gate = asyncio.Semaphore(window)

            async def one(i: int) -> None:
                async with gate:
                    await add(msgpack.packb([i, payload]))

            await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "latencies": latencies}


def outside_client(home: str, n: int, size: int) -> dict[str, Any]:
    """Ping-pong from a plain program (not an immortal) to the durable Sink.

    Only the Sink logs: each call costs one fsync, the way a client of a database or of a gRPC
    service would see it. Exactly-once still holds through the idempotency key of each call.
    """
    from runtime import connect

    payload = b"x" * size
    latencies = []
    with connect(home) as client:
        client.call("sink", "add", 1, payload)  # connected before the clock starts
        started = time.perf_counter()
        for i in range(2, n + 2):
            t = time.perf_counter()
            client.call("sink", "add", i, payload)
            latencies.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "latencies": latencies}


def main(argv: list[str]) -> None:
    if argv[0] == "immortals-outside-client":
        n, size = map(int, argv[2:4])
        print(json.dumps(outside_client(argv[1], n, size)))
        return
    kind, port = argv[0], int(argv[1])
    if kind == "asyncio-server":
        asyncio.run(asyncio_server(port))
    elif kind == "grpc-server":
        asyncio.run(grpc_server(port))
    elif kind == "asyncio-client":
        n, size, window = map(int, argv[2:5])
        print(json.dumps(asyncio.run(asyncio_client(port, n, size, window))))
    elif kind == "grpc-client":
        n, size, window = map(int, argv[2:5])
        print(json.dumps(asyncio.run(grpc_client(port, n, size, window, argv[5]))))
    else:
        raise SystemExit(f"unknown role {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
