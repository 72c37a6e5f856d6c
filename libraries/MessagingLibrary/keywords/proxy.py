"""Keywords for the fault proxy: network trouble between the client and any server, on demand."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from robot.api import logger
from robot.api.deco import keyword

from ..context import LibraryComponent, seconds
from ..engine.history import FAULT
from ..engine.proxy import (
    PRESETS,
    Action,
    Direction,
    FaultProxy,
    FaultRecord,
    FrameRule,
    Latency,
    PartitionEnd,
    ProxiedConnection,
    ProxyError,
)


class FaultProxyKeywords(LibraryComponent):
    """Start a fault proxy in front of the target, route connections through it, inject faults."""

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def proxy(self) -> FaultProxy:
        """The most recently started proxy that still runs."""
        for owned in reversed(self.ctx.owners):
            if isinstance(owned.resource, FaultProxy) and owned.resource.running:
                return owned.resource
        raise RuntimeError("No fault proxy is running: use 'Start Fault Proxy' first.")

    @keyword(tags=("proxy",))
    def start_fault_proxy(
        self,
        *faults: str,
        target: str | None = None,
        allow_remote: bool = False,
        route: bool = True,
    ) -> str:
        """Starts a fault proxy in front of ``target`` and returns the URL that reaches the target through it.

        The proxy runs in the library, on a free port on 127.0.0.1, and relays each WebSocket
        connection to ``target`` (default: the configured target) unchanged until a fault is
        injected with the keywords of this group (`Add Network Latency`, `Start Network
        Partition`, `Send TCP Reset`, `Drop Frames`, `Duplicate Frames`, `Delay Frames`,
        `Reorder Frames`, `Close Connection After Frames`). Every injected fault is recorded
        in the History with its time, and listed under each test's measurements.

        With ``route`` (the default) every connection opened afterwards (`Connect`, `Run
        Load`, pushers) goes through the proxy, until it stops; with ``route=False`` connect
        a single connection through it with ``Connect    alice    url=${proxy_url}``.

        ``faults`` are standing faults for the whole life of the proxy, by name (each item may
        be a comma-separated list, ``NAME=VALUE`` sets the number):

        | =Fault=                    | =What it does=                                                   |
        | reorder_responses[=5]      | per connection, response #2 and every 5th after it is overtaken by the next |
        | duplicate_responses[=5]    | per connection, response #1 and every 5th after it is sent twice |
        | drop_responses[=7]         | per connection, every 7th response is dropped                     |
        | duplicate_deliveries[=3]   | per connection, offline delivery #1 and every 3rd after it is sent twice |
        | drop_deliveries[=3]        | per connection, offline delivery #1 and every 3rd after it is dropped |
        | latency[=300]              | every server frame arrives 300 ms (±10%) late                     |
        | close_after[=100]          | each connection is reset after its 100th client message           |

        Responses are ``ai_response`` and ``throughput_response``; offline deliveries are
        ``pushed_message``.

        The target must be on this machine (a loopback address) unless ``allow_remote`` is
        true; the log then says that traffic leaves the machine. The proxy stops at the end
        of the test (or suite) that started it; connections through it are cut.

        | ${url} =    Start Fault Proxy
        | Start Fault Proxy    drop_responses    target=${url}    route=${False}
        """
        url = target or self.ctx.target.url
        if not url:
            raise RuntimeError("No target to put the proxy in front of: pass target= or call 'Configure Target' first.")
        specs = [name.strip() for item in faults for name in str(item).split(",") if name.strip()]
        target = self.ctx.target  # its dialect is read per relayed connection (the suites configure it later)
        proxy = FaultProxy(
            url,
            allow_remote=allow_remote,
            on_fault=self._recorder(),
            namer=self._namer(),
            codec_factory=lambda: target.dialect.codec(),
        )
        standing = proxy.apply_standing(specs)  # validates the names before anything starts
        self.ctx.run(proxy.start(), 10.0, "Starting the fault proxy")
        proxy.previous_target_url = self.ctx.target.url if route else None
        self.ctx.own(proxy)
        if route:
            self.ctx.target.url = proxy.url
        if proxy.remote:
            logger.warn(
                f"The fault proxy relays to a remote target ({proxy.target_host}): traffic leaves this machine "
                "(allow_remote=True)."
            )
        routed = "every new connection goes through it" if route else "connect through it with url="
        logger.info(
            f"Fault proxy at {proxy.url} in front of {url}; {routed}. Standing faults: "
            + ("; ".join(standing) if standing else "none")
        )
        return proxy.url

    @keyword(tags=("proxy",))
    def stop_fault_proxy(self) -> None:
        """Stops the most recent fault proxy: its connections are cut and routing goes back to the target.

        Usually not needed: a proxy stops at the end of the test or suite that started it.

        | Stop Fault Proxy
        """
        proxy = self.proxy
        self.release(proxy)
        self.ctx.owners = [o for o in self.ctx.owners if o.resource is not proxy]
        logger.info(f"Fault proxy {proxy.url} stopped.")

    def release(self, proxy: FaultProxy) -> None:
        """Stop ``proxy`` and route back to what it stood in front of (also at the end of its scope)."""
        if proxy.running:
            self.ctx.run(proxy.stop(), 10.0, "Stopping the fault proxy")
        if proxy.previous_target_url is not None and self.ctx.target.url == proxy.url:
            self.ctx.target.url = proxy.previous_target_url

    # -- faults ------------------------------------------------------------------------------

    @keyword(tags=("proxy", "fault"))
    def add_network_latency(
        self,
        delay: timedelta,
        jitter: timedelta = timedelta(0),
        *,
        direction: Direction = Direction.both,
        connection: str | None = None,
        starting_in: timedelta | None = None,
    ) -> None:
        """Delays every frame going ``direction`` by ``delay`` ± ``jitter`` (uniform), keeping their order.

        ``direction`` is ``to_client`` (server frames), ``to_server`` or ``both``.
        ``connection`` limits it to one connection (default: every connection through the proxy,
        including later ones). A zero ``delay`` removes the latency. ``starting_in`` injects it
        that long from now, while the test goes on (for example during `Run Load`).

        | Add Network Latency    200 ms    50 ms    direction=to_client
        """
        delay_s, jitter_s = seconds(delay) or 0.0, seconds(jitter) or 0.0
        if delay_s < 0 or jitter_s < 0:
            raise ValueError(f"Latency and jitter must not be negative, got {delay} and {jitter}.")
        latency = Latency(delay_s, jitter_s) if delay_s or jitter_s else None
        what = f"latency {delay_s * 1000:g} ms ± {jitter_s * 1000:g} ms ({direction.value})"
        self._inject(what, connection, starting_in, lambda proxy, target: proxy.set_latency(direction, latency, target))

    @keyword(tags=("proxy", "fault"))
    def start_network_partition(
        self,
        connection: str | None = None,
        *,
        duration: timedelta | None = None,
        then: PartitionEnd = PartitionEnd.heal,
        starting_in: timedelta | None = None,
    ) -> None:
        """Partitions the network: every frame of ``connection`` (default: every connection) is held, both ways.

        Nothing passes, not even pings, and neither end notices: the server still thinks the
        client is connected. With ``duration`` the partition ends by itself after that long,
        by ``then``: ``heal`` releases everything held, in order; ``cut`` resets the
        connections instead (what was held is lost). Without ``duration`` it lasts until
        `End Network Partition`. A partition of every connection also holds new connections.

        | Start Network Partition    alice
        | Start Network Partition    duration=1 s    then=cut    starting_in=500 ms
        """
        limit = seconds(duration)
        if limit is not None and limit <= 0:
            raise ValueError(f"A partition's duration must be positive, got {duration}.")

        def apply(proxy: FaultProxy, target: int | None) -> None:
            proxy.partition(target)
            if limit is not None:
                proxy.schedule(limit, lambda: proxy.end_partition(then, target))

        what = "network partition" + (f" for {limit:g} s, then {then.value}" if limit is not None else "")
        self._inject(what, connection, starting_in, apply)

    @keyword(tags=("proxy", "fault"))
    def end_network_partition(self, connection: str | None = None, *, then: PartitionEnd = PartitionEnd.heal) -> int:
        """Ends a partition: ``heal`` releases what was held, in order; ``cut`` resets the connections.

        Returns how many frames were held. Without ``connection``, ends every partition.

        | End Network Partition    alice    then=cut
        """
        proxy = self.proxy
        target = self._connection_id(connection)
        held = self.ctx.loop.call(lambda: proxy.end_partition(then, target))
        logger.info(f"Partition {'healed' if then is PartitionEnd.heal else 'cut'}: {held} frame(s) were held.")
        return held

    @keyword(name="Send TCP Reset", tags=("proxy", "fault"))
    def send_tcp_reset(self, connection: str | None = None, *, starting_in: timedelta | None = None) -> None:
        """Resets ``connection`` (default: every connection through the proxy) with a TCP RST, both ways.

        Client and server both see the connection fail with no close frame (code 1006).

        | Send TCP Reset    alice
        """
        self._inject("TCP reset", connection, starting_in, lambda proxy, target: proxy.reset(target))

    @keyword(tags=("proxy", "fault", "frames"))
    def drop_frames(
        self,
        *types: str,
        direction: Direction = Direction.both,
        every: int = 1,
        start: int | None = None,
        count: int | None = None,
        connection: str | None = None,
        starting_in: timedelta | None = None,
    ) -> str:
        """Drops data frames: those of the given ``types`` (their JSON ``type``; default: any) going ``direction``.

        Matching frames are counted per connection from now on; the proxy acts on the
        ``start``-th (default: the ``every``-th) and every ``every``-th after it, at most
        ``count`` times in all (default: no limit). Returns the rule in words.

        | Drop Frames    ai_response    count=1                        # drop the next ai_response
        | Drop Frames    direction=to_client    every=50               # every 50th server frame
        """
        return self._frame_rule(Action.drop, types, direction, every, start, count, connection, starting_in)

    @keyword(tags=("proxy", "fault", "frames"))
    def duplicate_frames(
        self,
        *types: str,
        direction: Direction = Direction.both,
        every: int = 1,
        start: int | None = None,
        count: int | None = None,
        connection: str | None = None,
        starting_in: timedelta | None = None,
    ) -> str:
        """Sends selected data frames twice, byte for byte (selection as in `Drop Frames`).

        | Duplicate Frames    direction=to_client    every=50          # every 50th server frame
        """
        return self._frame_rule(Action.duplicate, types, direction, every, start, count, connection, starting_in)

    @keyword(tags=("proxy", "fault", "frames"))
    def delay_frames(
        self,
        delay: timedelta,
        *types: str,
        direction: Direction = Direction.both,
        every: int = 1,
        start: int | None = None,
        count: int | None = None,
        connection: str | None = None,
        starting_in: timedelta | None = None,
    ) -> str:
        """Holds selected data frames for ``delay`` while later frames pass them (selection as in `Drop Frames`).

        Unlike `Add Network Latency`, this changes the order: the delayed frame arrives after
        the frames sent in the meantime.

        | Delay Frames    500 ms    ai_response    count=1
        """
        delay_s = seconds(delay) or 0.0
        return self._frame_rule(
            Action.delay, types, direction, every, start, count, connection, starting_in, delay_s=delay_s
        )

    @keyword(tags=("proxy", "fault", "frames"))
    def reorder_frames(
        self,
        *types: str,
        direction: Direction = Direction.both,
        every: int = 2,
        start: int | None = None,
        count: int | None = None,
        connection: str | None = None,
        starting_in: timedelta | None = None,
    ) -> str:
        """Swaps each selected data frame with the next data frame going the same way (selection as in `Drop Frames`).

        The selected frame is held until the next one has passed (at most 1 s, then it goes
        on alone). ``every`` defaults to 2: frames 2, 4, 6, ... are overtaken.

        | Reorder Frames    ai_response    count=1    start=2        # the 2nd ai_response arrives after the 3rd
        """
        return self._frame_rule(Action.reorder, types, direction, every, start, count, connection, starting_in)

    @keyword(tags=("proxy", "fault", "frames"))
    def close_connection_after_frames(
        self,
        frames: int,
        *types: str,
        direction: Direction = Direction.both,
        connection: str | None = None,
        resends_count: bool = True,
    ) -> str:
        """Resets each connection (or ``connection``) right after its ``frames``-th data frame (of ``types``) passed.

        The frame itself arrives; nothing after it does; then both sides see a TCP reset. A
        new connection (a reconnect) is counted from zero again. With ``resends_count=False``
        a frame whose ``message_id`` already passed once is not counted, so a client that
        resends its backlog after each reconnect cannot be reset forever by its own resends.

        | Close Connection After Frames    100    direction=to_server
        | Close Connection After Frames    50    user_message    direction=to_server    resends_count=${False}
        """
        return self._frame_rule(
            Action.close, types, direction, frames, None, None, connection, None, distinct_ids=not resends_count
        )

    @keyword(tags=("proxy", "fault"))
    def clear_network_faults(self) -> None:
        """Removes every fault injected into the proxy: rules, latency, scheduled faults; heals partitions.

        Standing faults given to `Start Fault Proxy` stay.

        | Clear Network Faults
        """
        proxy = self.proxy
        self.ctx.loop.call(proxy.clear)
        logger.info("Network faults cleared (standing faults stay).")

    @keyword(tags=("proxy", "fault", "reporting"))
    def get_injected_faults(self, *, whole_suite: bool = False) -> list[dict[str, Any]]:
        """Returns the faults the proxy injected in this test (or, with ``whole_suite``, since the History began).

        Each item has ``at_s`` (seconds since this test started), ``fault`` (``drop``,
        ``duplicate``, ``delay``, ``reorder``, ``reset``, ``partition started``, ...),
        ``connection`` (its name, when the connection is one of this library's) and details
        (the rule, the frame's type and ids).

        | ${faults} =    Get Injected Faults
        | Length Should Be    ${faults}    1
        """
        since = 0 if whole_suite else self.ctx.test_mark
        started = self.ctx.test_started_ns
        return [
            {
                "at_s": round((event.ts_ns - started) / 1e9, 6),
                "connection": event.connection,
                **{k: v for k, v in event.frame.items() if k != "type"},
            }
            for event in self.ctx.history.select(since, direction=FAULT)
        ]

    # -- helpers -----------------------------------------------------------------------------

    def _frame_rule(
        self,
        action: Action,
        types: tuple[str, ...],
        direction: Direction,
        every: int,
        start: int | None,
        count: int | None,
        connection: str | None,
        starting_in: timedelta | None,
        delay_s: float = 0.0,
        distinct_ids: bool = False,
    ) -> str:
        try:
            rule = FrameRule(
                action,
                direction,
                frozenset(types) if types else None,
                every=int(every),
                start=start,
                limit=count,
                delay_s=delay_s,
                distinct_ids=distinct_ids,
            )
        except ProxyError as error:
            raise ValueError(str(error)) from None

        def apply(proxy: FaultProxy, target: int | None) -> None:
            rule.connection = target
            proxy.add_rule(rule)

        self._inject(rule.describe(), connection, starting_in, apply)
        return rule.describe()

    def _inject(self, what: str, connection: str | None, starting_in: timedelta | None, apply) -> None:
        """Apply ``apply(proxy, connection id or None)`` on the loop now, or ``starting_in`` from now."""
        proxy = self.proxy
        target = self._connection_id(connection)
        delay = seconds(starting_in) or 0.0
        if delay < 0:
            raise ValueError(f"starting_in must not be negative, got {starting_in}.")
        scope = f" on '{connection}'" if connection else ""
        if delay:
            self.ctx.loop.call(lambda: proxy.schedule(delay, lambda: apply(proxy, target)))
            logger.info(f"Scheduled in {delay:g} s: {what}{scope}.")
            return
        try:
            self.ctx.loop.call(lambda: apply(proxy, target))
        except ProxyError as error:
            raise RuntimeError(str(error)) from None
        logger.info(f"Injected: {what}{scope}.")

    def _connection_id(self, connection: str | None) -> int | None:
        """The proxied connection of the library's ``connection`` (matched by the client's local address)."""
        if connection is None:
            return None
        session = self.ctx.session(connection)
        proxy = self.proxy

        def find() -> int | None:
            if session.ws is None or not session.is_open:
                return None
            local = session.ws.local_address
            for proxied in proxy.connections.values():
                if proxied.client_address == local:
                    return proxied.id
            return None

        found = self.ctx.loop.call(find)
        if found is None:
            state = "is not open" if not session.is_open else f"connects to {session.url}, not through the fault proxy"
            raise RuntimeError(f"Connection '{connection}' {state} (the proxy is at {proxy.url}).")
        return found

    def _namer(self):
        ctx = self.ctx

        def name(connection: ProxiedConnection) -> str | None:
            """The name of the library's connection behind ``connection`` (or ``load NAME/cN``)."""
            address = connection.client_address
            if address is None:
                return None
            for name, session in list(ctx.sessions.items()):
                if session.ws is not None and session.ws.local_address == address:
                    return name
            engine = ctx.load_engine
            for load_connection in engine.connections if engine is not None else ():
                if load_connection.local_address == address:
                    return f"load {engine.plan.name}/{load_connection.name}"
            return None

        return name

    def _recorder(self):
        history = self.ctx.history

        def record(fault: FaultRecord) -> None:
            history.record_fault(fault.connection, fault.ts_ns, fault=fault.fault, **fault.details)

        return record


__all__ = ["PRESETS", "FaultProxyKeywords"]
