"""Running generations for the HTTP server: admission, a bounded queue, and batched stepping
off the event loop.

A request is admitted (or refused with :class:`OverloadedError` when the queue is full) before
its generations are created, so a refused request costs no prefix-cache copy, and before any
response starts, so a full server answers with a proper status code. It then waits for one of
``max_concurrent`` slots. The running generations advance together: each step of the
:class:`Batcher` runs one token of every generation that is waiting for one, in a single forward
pass over the weights (:func:`smolgen.step_streams`), in a worker thread with the GIL released,
so the event loop keeps serving other clients between steps. A request whose client went away
stops at its next step, and its keys and values go to the prefix cache.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from ..errors import ClientDisconnectedError, InvalidArgumentError, OverloadedError
from ..model import CompletionStream, Model, step_streams

log = logging.getLogger("smolgen.server")


@dataclass
class Counters:
    running: int = 0
    waiting: int = 0
    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    refused: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class Ticket:
    """One admitted request's place in the system; released exactly once."""

    scheduler: Scheduler
    released: bool = field(default=False)

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.scheduler.counters.waiting -= 1

    def __del__(self) -> None:
        # A response body that was never iterated (the client left at once) still frees its
        # place.
        self.release()


@dataclass
class Admitted:
    """One generation of an admitted request: its place in the queue and its stream."""

    ticket: Ticket
    stream: CompletionStream


class Scheduler:
    """The model behind the server, shared by every request: who runs, who waits, who is
    refused."""

    def __init__(
        self,
        model: Model,
        model_id: str,
        *,
        aliases: tuple[str, ...] = (),
        max_concurrent: int = 4,
        max_queue: int = 32,
        max_tokens_default: int = 512,
        temperature: float | None = None,
        top_p: float | None = None,
    ) -> None:
        if max_concurrent < 1 or max_queue < 0 or max_tokens_default < 1:
            raise InvalidArgumentError(
                "max_concurrent and max_tokens_default must be >= 1, max_queue >= 0"
            )
        if temperature is not None and not 0 <= temperature <= 2:
            raise InvalidArgumentError(f"temperature must be from 0 to 2, not {temperature}")
        if top_p is not None and not 0 < top_p <= 1:
            raise InvalidArgumentError(f"top_p must be in (0, 1], not {top_p}")
        self.model = model
        self.model_id = model_id
        self.aliases = {model_id, *aliases}
        self.created = int(time.time())
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        # A request's max_tokens when it gives none: not the rest of the context window,
        # which is minutes of decoding on a CPU.
        self.max_tokens_default = max_tokens_default
        # The sampling of a request that gives none of its own (None: the core's default).
        self.sampling_defaults: dict[str, float | None] = {
            "temperature": temperature,
            "top_p": top_p,
        }
        self.counters = Counters()
        self._slots = anyio.Semaphore(max_concurrent)
        self._threads = anyio.CapacityLimiter(max_concurrent)
        self.batcher = Batcher()

    def serves(self, model_id: str) -> bool:
        """Whether a request's ``model`` names the served model (its id or an alias)."""
        return model_id in self.aliases

    def admit(self) -> Ticket:
        """A place for one generation, or :class:`OverloadedError`. Called on the event loop
        with no await in between check and count, so two requests cannot both take the last
        place."""
        admitted = self.counters.running + self.counters.waiting
        if admitted >= self.max_concurrent + self.max_queue:
            self.counters.refused += 1
            raise OverloadedError(
                f"the server is busy: {self.counters.running} requests running and "
                f"{self.counters.waiting} waiting (limit {self.max_concurrent} + "
                f"{self.max_queue}); retry later"
            )
        self.counters.waiting += 1
        return Ticket(self)

    def check_count(self, count: int) -> None:
        """Raises :class:`InvalidArgumentError` for a request of more generations than the
        server ever holds at once (running and waiting): a 400, as no retry would get it in."""
        places = self.max_concurrent + self.max_queue
        if count > places:
            raise InvalidArgumentError(
                f"n: the request asks for {count} generations (n for each prompt); this server "
                f"holds at most {places} at once",
                param="n",
            )

    def start(self, count: int, create: Callable[[int], CompletionStream]) -> list[Admitted]:
        """Admits ``count`` generations of one request, all or none, and only then creates
        them with ``create(i)`` (which may copy the prompt's keys and values from the prefix
        cache): a refused request costs nothing. A generation that cannot be created (a bad
        argument) gives back every place taken."""
        self.check_count(count)
        tickets: list[Ticket] = []
        streams: list[CompletionStream] = []
        try:
            for _ in range(count):
                tickets.append(self.admit())
            for i in range(count):
                streams.append(create(i))
        except BaseException:
            for ticket in tickets:
                ticket.release()
            for stream in streams:
                stream.close()
            raise
        return [Admitted(t, s) for t, s in zip(tickets, streams, strict=True)]

    async def run_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Runs blocking model work (tokenizing, a forward pass) in a worker thread."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._threads)

    async def stream(
        self,
        ticket: Ticket,
        stream: CompletionStream,
        is_disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> AsyncIterator[Any]:
        """The chunks of ``stream`` (admitted with ``ticket``), once a slot is free.

        Raises :class:`ClientDisconnectedError` when ``is_disconnected()`` turns true between
        steps. The generation is closed however this ends: finished, cancelled or failed.
        """
        try:
            await self._slots.acquire()
        except BaseException:
            ticket.release()
            stream.close()
            raise
        ticket.release()
        self.counters.running += 1
        self.batcher.active += 1
        outcome = "failed"
        try:
            while True:
                if is_disconnected is not None and await is_disconnected():
                    raise ClientDisconnectedError("the client went away")
                # A cancelled request waits for the step in flight (see `Batcher.next_chunk`),
                # then closes its generation below, never while a thread still uses it.
                chunk = await self.batcher.next_chunk(stream)
                if chunk is None:
                    break
                yield chunk
            outcome = "completed"
        except (ClientDisconnectedError, anyio.get_cancelled_exc_class(), GeneratorExit):
            outcome = "cancelled"
            raise
        finally:
            self._slots.release()
            self.counters.running -= 1
            self.batcher.active -= 1
            setattr(self.counters, outcome, getattr(self.counters, outcome) + 1)
            if outcome == "cancelled":
                log.info("client went away: generation stopped")
            stream.close()


_PENDING: Any = object()
# Event-loop turns a step's leader waits for the other running streams to ask for their next
# token (a turn is tens of microseconds; a decode step is milliseconds).
_GATHER_TURNS = 32


class Batcher:
    """Steps every generation that wants its next token in one batched forward pass.

    No background task: the first request to ask for a token while no step is running leads
    the next step. It first lets the other running requests, which have just been handed their
    previous chunk, come back for the next one (a few turns of the event loop at most), then
    takes every stream waiting; the others wait for that step (or lead the next one if they
    arrive after it started).
    """

    def __init__(self) -> None:
        self._waiting: dict[int, tuple[CompletionStream, list[Any]]] = {}
        self._in_flight: anyio.Event | None = None
        self._batch: set[int] = set()
        self.active = 0  # streams between their first and last chunk
        self.steps = 0
        self.stepped_tokens = 0

    async def next_chunk(self, stream: CompletionStream) -> Any:
        """The stream's next chunk, or ``None`` once it is finished."""
        result = [_PENDING]
        key = id(stream)
        self._waiting[key] = (stream, result)
        try:
            while result[0] is _PENDING:
                # A step is shielded from cancellation; this is where a request cancelled in
                # the meantime (its client hung up) learns of it.
                await anyio.lowlevel.checkpoint()
                if self._in_flight is None:
                    await self._lead()
                else:
                    await self._in_flight.wait()
        except BaseException:
            self._waiting.pop(key, None)
            if key in self._batch and self._in_flight is not None:
                # Our stream is inside the running step: let it finish before the caller
                # closes the stream.
                with anyio.CancelScope(shield=True):
                    await self._in_flight.wait()
            raise
        if isinstance(result[0], BaseException):
            raise result[0]
        return result[0]

    async def _lead(self) -> None:
        done = anyio.Event()
        self._in_flight = done
        # Shielded: once claimed, a step runs and its results are handed out, whoever led it.
        with anyio.CancelScope(shield=True):
            for _ in range(_GATHER_TURNS):
                if len(self._waiting) >= self.active:
                    break
                await anyio.sleep(0)
            batch = list(self._waiting.items())
            self._waiting.clear()
            self._batch = {key for key, _ in batch}
            try:
                streams = [stream for _, (stream, _) in batch]
                results = await anyio.to_thread.run_sync(step_streams, streams)
            except BaseException as e:  # the binding itself failed: every member sees it
                results = [e] * len(batch)
            finally:
                self._in_flight = None
                self._batch = set()
                done.set()
            for (_, (_, slot)), res in zip(batch, results, strict=True):
                slot[0] = res
            self.steps += 1
            self.stepped_tokens += sum(1 for r in results if r is not None)
