"""A fault-injecting TCP proxy on loopback, for tests: put it in front of a datasite's port
and make the network slow, lossy, partitioned or frozen while clients talk through it.

    with FaultProxy(site.port) as proxy:          # listens on 127.0.0.1:proxy.port
        client = sy.login(url="http://127.0.0.1", port=proxy.port, ...)
        proxy.latency = 0.1                       # seconds added to every chunk, each way
        proxy.reset_rate = 0.05                   # share of new connections that get reset
        proxy.partition = "hang"                  # or "refuse"; None heals it
        proxy.freeze = True                       # hold every byte until False
        proxy.heal()                              # every knob back to normal

Knobs can be changed at any time, from any thread; ``partition`` and ``freeze`` are in
force when the assignment returns. What each one does:

- ``latency``: seconds added before each chunk is forwarded, in both directions;
  ``connect_latency``: seconds added before a new connection reaches the target;
- ``reset_rate``: each new connection is reset (TCP RST to both ends) with this
  probability; ``reset_on`` says when: ``"request"`` (default) as the client's first bytes
  arrive, which are never forwarded; ``"response"`` as the target's first reply bytes
  arrive (the target did the work, the client never hears of it);
- ``partition``: ``"hang"`` accepts connections and silently drops every byte both ways
  (a black hole; when it heals, connections that lost bytes are reset, fresh ones work);
  ``"refuse"`` stops listening (connection refused) and resets every open connection;
  ``None`` listens again on the same port;
- ``freeze``: bytes are held, not lost: everything buffered is forwarded once it thaws.

Counters: ``connections`` (accepted), ``resets`` (connections the proxy reset),
``dropped`` (bytes lost to a hang), ``bytes_up`` / ``bytes_down`` (forwarded to the target
/ back to clients). Only loopback: it listens on 127.0.0.1 and forwards to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading

__all__ = ["FaultProxy"]

LOOPBACK = "127.0.0.1"
_LOOPBACK_NAMES = ("127.0.0.1", "localhost")
_PARTITIONS = (None, "hang", "refuse")


class _Connection:
    def __init__(self, client: asyncio.StreamWriter, doomed: bool):
        self.client = client
        self.target: asyncio.StreamWriter | None = None
        self.doomed = doomed  # to be reset (reset_rate), on the direction reset_on names
        self.broken = False  # lost bytes to a hang: reset when the partition heals
        self.closed = False

    def reset(self) -> None:
        """Abort both ends with an RST (SO_LINGER 0), not a polite FIN."""
        if self.closed:
            return
        self.closed = True
        for writer in (self.client, self.target):
            if writer is None:
                continue
            sock = writer.get_extra_info("socket")
            try:
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            writer.transport.abort()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for writer in (self.client, self.target):
            if writer is not None:
                writer.close()


class FaultProxy:
    """A TCP proxy from ``127.0.0.1:port`` to ``127.0.0.1:target_port`` with fault knobs."""

    def __init__(self, target_port: int, *, target_host: str = LOOPBACK, port: int = 0, seed: int | None = None):
        if target_host not in _LOOPBACK_NAMES:
            raise ValueError(f"FaultProxy forwards to loopback only, not {target_host!r}")
        self.target_port = int(target_port)
        self.port = int(port)  # 0: a free port, chosen at start
        self.latency = 0.0
        self.connect_latency = 0.0
        self.reset_rate = 0.0
        self._reset_on = "request"
        self.connections = self.resets = self.dropped = self.bytes_up = self.bytes_down = 0
        self._random = random.Random(seed)
        self._partition: str | None = None
        self._frozen = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[_Connection] = set()
        self._thawed: asyncio.Event | None = None

    # --- life -------------------------------------------------------------------------------

    def start(self) -> "FaultProxy":
        if self._loop is not None:
            return self
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"fault-proxy-{self.target_port}",
                                        daemon=True)
        self._thread.start()
        try:
            self._call(self._start())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop listening, reset every connection, end the proxy's thread."""
        if self._loop is None:
            return
        try:
            self._call(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
            self._loop = self._thread = None

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def __repr__(self) -> str:
        return (f"FaultProxy({LOOPBACK}:{self.port} -> {LOOPBACK}:{self.target_port}, latency={self.latency}, "
                f"reset_rate={self.reset_rate}, partition={self._partition}, freeze={self._frozen})")

    # --- knobs that need the loop -----------------------------------------------------------

    @property
    def reset_on(self) -> str:
        return self._reset_on

    @reset_on.setter
    def reset_on(self, value: str) -> None:
        if value not in ("request", "response"):
            raise ValueError(f"reset_on must be 'request' or 'response', got {value!r}")
        self._reset_on = value

    @property
    def address(self) -> tuple[str, int] | None:
        """Where it listens now (None while partitioned with "refuse")."""
        server = self._server
        return server.sockets[0].getsockname()[:2] if server is not None and server.sockets else None

    @property
    def partition(self) -> str | None:
        return self._partition

    @partition.setter
    def partition(self, value: str | None) -> None:
        if value not in _PARTITIONS:
            raise ValueError(f"partition must be one of {_PARTITIONS}, got {value!r}")
        self._call(self._set_partition(value))

    @property
    def freeze(self) -> bool:
        return self._frozen

    @freeze.setter
    def freeze(self, value: bool) -> None:
        self._call(self._set_freeze(bool(value)))

    def heal(self) -> None:
        """No latency, no resets, no partition, no freeze."""
        self.latency = self.connect_latency = self.reset_rate = 0.0
        self.partition = None
        self.freeze = False

    def _call(self, coro):
        if self._loop is None:
            coro.close()
            raise RuntimeError("the proxy is not running: use `with FaultProxy(port) as proxy:` or .start()")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    # --- inside the loop --------------------------------------------------------------------

    async def _start(self) -> None:
        self._thawed = asyncio.Event()
        self._thawed.set()
        await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, LOOPBACK, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _unlisten(self) -> None:
        if self._server is not None:
            self._server.close()  # wait_closed() would wait for the connections too
            self._server = None

    async def _shutdown(self) -> None:
        await self._unlisten()
        for conn in list(self._conns):
            conn.reset()
        self._thawed.set()
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _set_partition(self, value: str | None) -> None:
        before, self._partition = self._partition, value
        if value == "refuse":
            await self._unlisten()
            for conn in list(self._conns):
                conn.reset()
                self.resets += 1
        elif before == "refuse":
            await self._listen()
        if before == "hang" and value != "hang":
            for conn in [c for c in self._conns if c.broken]:
                conn.reset()
                self.resets += 1

    async def _set_freeze(self, value: bool) -> None:
        self._frozen = value
        if value:
            self._thawed.clear()
        else:
            self._thawed.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = _Connection(writer, doomed=self._random.random() < self.reset_rate)
        self._conns.add(conn)
        try:
            if self.connect_latency:
                await asyncio.sleep(self.connect_latency)
            try:
                target_reader, conn.target = await asyncio.open_connection(LOOPBACK, self.target_port)
            except OSError:  # the target is down: the client sees its connection reset
                conn.reset()
                return
            await asyncio.gather(self._pump(conn, reader, conn.target, "request"),
                                 self._pump(conn, target_reader, writer, "response"))
        except asyncio.CancelledError:  # the proxy stops (not re-raised: asyncio would log it as an error)
            conn.reset()
        finally:
            conn.close()
            self._conns.discard(conn)

    async def _pump(self, conn: _Connection, source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                    direction: str) -> None:
        while not conn.closed:
            try:
                data = await source.read(1 << 16)
            except (ConnectionError, OSError):
                conn.reset()  # one end reset: so is the other
                return
            if not data:
                try:
                    if sink.can_write_eof() and not sink.is_closing():
                        sink.write_eof()
                except (ConnectionError, OSError):
                    pass
                return
            if self._partition == "hang":
                conn.broken = True
                self.dropped += len(data)
                continue
            if conn.doomed and direction == self._reset_on:
                conn.reset()
                self.resets += 1
                return
            if not self._thawed.is_set():
                await self._thawed.wait()
            if self.latency:
                await asyncio.sleep(self.latency)
            if conn.closed:
                return
            if self._partition == "hang":  # it began while this chunk was held
                conn.broken = True
                self.dropped += len(data)
                continue
            if direction == "request":
                self.bytes_up += len(data)
            else:
                self.bytes_down += len(data)
            try:
                sink.write(data)
                await sink.drain()
            except (ConnectionError, OSError):
                conn.reset()
                return
