"""The pooled backend client against tiny asyncio servers on 127.0.0.1 that misbehave on purpose."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable

import pytest

from localmodel_server import http_limits
from localmodel_server.router.upstream import IDLE_REUSE_S, ConnectFailed, UpstreamClosed, UpstreamPool, UpstreamTimeout

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    return head + await reader.readexactly(length)


def run(serve: Serve, client: Callable[[UpstreamPool, str, list[int]], Awaitable[None]], **pool_args: float) -> list[int]:
    """Run `client` against a server calling `serve` per connection; returns the connections accepted."""

    async def main() -> list[int]:
        accepted: list[int] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(1)
            try:
                await serve(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = UpstreamPool(**pool_args)
        try:
            await client(pool, f"http://127.0.0.1:{port}", accepted)
        finally:
            pool.close()
            server.close()
        return accepted

    return asyncio.run(main())


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()


def test_connections_are_reused():
    async def client(pool: UpstreamPool, url: str, accepted: list[int]) -> None:
        for _ in range(3):
            response = await pool.request(url, b"POST", b"/v1/embeddings", b"", b"{}")
            assert response.status == 200 and await response.read() == b"{}"

    assert len(run(keep_alive, client)) == 1


def test_a_pooled_connection_the_server_closed_is_not_reused():
    async def one_answer_then_silent_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)  # keep-alive promised (HTTP/1.1 default), then the server closes anyway
        await writer.drain()

    async def client(pool: UpstreamPool, url: str, accepted: list[int]) -> None:
        first = await pool.request(url, b"POST", b"/", b"", b"{}")
        await first.read()
        await asyncio.sleep(0.05)  # the close arrives
        second = await pool.request(url, b"POST", b"/", b"", b"{}")
        assert second.status == 200

    assert len(run(one_answer_then_silent_close, client)) == 2


def test_a_close_the_loop_has_not_seen_yet_keeps_the_connection_out_of_use():
    # The server is in another thread and closes while this loop is blocked, so the close waits
    # unread in the socket when the pool next wants the connection: it must look before it writes.
    requests: list[bytes] = []

    def serve(listener: socket.socket) -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            with conn:
                requests.append(conn.recv(65536))
                conn.sendall(OK)

    async def main() -> None:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            thread = threading.Thread(target=serve, args=(listener,), daemon=True)
            thread.start()
            pool = UpstreamPool()
            url = f"http://127.0.0.1:{listener.getsockname()[1]}"
            try:
                first = await pool.request(url, b"POST", b"/", b"", b"{}")
                await first.read()
                time.sleep(0.2)  # blocks the loop: the server's close is in the socket, unseen
                second = await pool.request(url, b"POST", b"/", b"", b"{}")
                assert second.status == 200 and await second.read() == b"{}"
            finally:
                pool.close()
            thread.join(5)

    asyncio.run(main())
    assert len(requests) == 2


def test_a_request_the_backend_received_on_a_reused_connection_is_not_replayed():
    seen: list[bytes] = []

    async def answer_once_then_crash_on_the_next(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        seen.append(await read_request(reader))  # the backend has it, and goes away without an answer

    async def client(pool: UpstreamPool, url: str, accepted: list[int]) -> None:
        first = await pool.request(url, b"POST", b"/", b"", b"{}")
        await first.read()
        with pytest.raises(UpstreamClosed):
            await pool.request(url, b"POST", b"/", b"", b'{"n": 2}')

    assert len(run(answer_once_then_crash_on_the_next, client)) == 1
    assert len(seen) == 1


def test_refused_connection_is_connect_failed():
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        pool = UpstreamPool()
        with pytest.raises(ConnectFailed, match="cannot connect"):
            await pool.request(f"http://127.0.0.1:{port}", b"POST", b"/", b"", b"{}")

    asyncio.run(main())


def test_silent_backend_times_out():
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    async def client(pool: UpstreamPool, url: str, accepted: list[int]) -> None:
        with pytest.raises(UpstreamTimeout, match="sent nothing for 0.3 s"):
            await pool.request(url, b"POST", b"/", b"", b"{}")

    run(never_answer, client, read_timeout=0.3)


def test_stream_cut_mid_body_is_upstream_closed_after_the_chunks_that_arrived():
    async def half_a_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"7\r\ndata: 1\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)

    async def client(pool: UpstreamPool, url: str, accepted: list[int]) -> None:
        response = await pool.request(url, b"POST", b"/", b"", b"{}")
        assert await response.next_chunk() == b"data: 1"
        with pytest.raises(UpstreamClosed):
            await response.next_chunk()

    run(half_a_stream, client)


def test_closing_an_unfinished_response_closes_the_connection():
    disconnected: list[int] = []

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            while True:
                writer.write(b"1\r\nx\r\n")
                await writer.drain()
                await asyncio.sleep(0.01)
        except ConnectionError:
            disconnected.append(1)  # what a model server sees when it should free the slot

    async def client(pool: UpstreamPool, url: str, accepted: list[int]) -> None:
        response = await pool.request(url, b"POST", b"/", b"", b"{}")
        assert await response.next_chunk()
        response.close()
        for _ in range(100):
            if disconnected:
                break
            await asyncio.sleep(0.01)
        # The next request cannot reuse the aborted connection: a new one is opened.
        again = await pool.request(url, b"POST", b"/", b"", b"{}")
        assert again.status == 200
        again.close()

    assert len(run(endless, client)) == 2
    assert disconnected


def test_a_finished_answer_lets_go_of_the_connection_the_next_request_owns():
    pieces, big = 200, 8 << 20

    async def two_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"3\r\nabc\r\n" * pieces + b"0\r\n\r\n")
        await writer.drain()
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (big, b"y" * big))
        await writer.drain()

    async def client(pool: UpstreamPool, url: str, accepted: list[int]) -> None:
        first = await pool.request(url, b"POST", b"/", b"", b"{}")
        while not first.complete:  # all of it arrives; nobody reads it yet
            await asyncio.sleep(0.01)
        second = await pool.request(url, b"POST", b"/", b"", b"{}")  # on the same, released, connection
        while second.buffered < 1 << 20:  # the second answer fills its buffer and pauses the connection
            await asyncio.sleep(0.01)
        # A slow reader of the first answer catches up, piece by piece, as a proxy relaying it would ...
        while await first.next_chunk() is not None:
            await asyncio.sleep(0.001)
        # ... and must not have resumed reading for the second, which nobody reads.
        assert second.buffered < 2 << 20
        assert len(await second.read()) == big

    assert len(run(two_answers, client)) == 1


def test_an_idle_connection_is_reused_inside_the_servers_keep_alive():
    # Above the 4 s the pool once assumed (uvicorn's default), well inside the server's own setting.
    assert IDLE_REUSE_S < http_limits.SERVER_KEEP_ALIVE_S

    async def client(pool: UpstreamPool, url: str, accepted: list[int]) -> None:
        await (await pool.request(url, b"POST", b"/", b"", b"{}")).read()
        await asyncio.sleep(4.5)
        await (await pool.request(url, b"POST", b"/", b"", b"{}")).read()

    assert len(run(keep_alive, client)) == 1
