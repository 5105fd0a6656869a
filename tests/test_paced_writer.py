"""The paced writer keeps a connection's frames in order while holding little in the transport."""

from __future__ import annotations

import asyncio
import os

from runtime._paced import CHUNK, WRITE_AHEAD, PacedWriter


def test_large_frames_arrive_whole_and_in_order_with_a_short_transport_buffer() -> None:
    frames = [os.urandom(3 << 20) for _ in range(6)] + [b"small", os.urandom(100)]
    high_water: list[int] = []

    async def scenario() -> bytes:
        received = bytearray()
        done = asyncio.Event()

        async def slow_reader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while len(received) < sum(map(len, frames)):
                received.extend(await reader.read(1 << 16))
                await asyncio.sleep(0.0005)  # a reader slower than the writer
            writer.close()
            done.set()

        server = await asyncio.start_server(slow_reader, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        paced = PacedWriter(writer)
        for frame in frames:
            paced.write(frame)
            high_water.append(writer.transport.get_write_buffer_size())
        assert paced.backlog > 0  # the rest waits as views of the frames
        while not done.is_set():
            high_water.append(writer.transport.get_write_buffer_size())
            await asyncio.sleep(0.001)
        paced.close()
        server.close()
        await server.wait_closed()
        return bytes(received)

    assert asyncio.run(asyncio.wait_for(scenario(), 60)) == b"".join(frames)
    assert max(high_water) <= WRITE_AHEAD + CHUNK  # not the 18 MiB handed to it at once


def test_a_small_frame_on_an_idle_connection_is_written_at_once() -> None:
    async def scenario() -> tuple[bool, bytes]:
        got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            got.set_result(await reader.read(100))
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        paced = PacedWriter(writer)
        paced.write(b"ping")
        queued = paced.backlog > 0
        data = await asyncio.wait_for(got, 10)
        paced.close()
        server.close()
        await server.wait_closed()
        return queued, data

    queued, data = asyncio.run(scenario())
    assert not queued and data == b"ping"
