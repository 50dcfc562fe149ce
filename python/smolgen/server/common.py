"""What every endpoint shares: the lenient request base, the sampling fields (declared once for
every request type), the generation budget, server-sent events, usage, and the one generator of
a request's events that the streaming and the whole response both consume."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, NoReturn, TypeVar

from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..chat import check_context
from ..errors import InternalError, InvalidArgumentError

if TYPE_CHECKING:
    from ..model import Completion, Model
    from .scheduler import Admitted, Scheduler

T = TypeVar("T")


class Lenient(BaseModel):
    """Unknown fields are ignored: clients send newer fields than we know."""

    model_config = ConfigDict(extra="ignore")


class Response(BaseModel):
    """A response body or stream event. Every field is sent (``None`` as ``null``) except the
    ones named in ``optional``, which are left out unless given: the shapes APIs send."""

    optional: ClassVar[frozenset[str]] = frozenset()

    def model_post_init(self, context: Any) -> None:
        self.__pydantic_fields_set__.update(set(type(self).model_fields) - self.optional)


#: The largest count or token id a request may give (a C ``int``): larger ones are no
#: vocabulary's, no context window's, and would overflow the core's integer types.
MAX_INT = 2**31 - 1

#: ``max_tokens`` as every API takes it; its default is the API's own.
MaxTokens = Annotated[int, Field(ge=1, le=MAX_INT)]
#: A token id as a request gives it; the model's vocabulary bounds it further
#: (:func:`check_token_ids`).
TokenId = Annotated[int, Field(ge=0, le=MAX_INT)]
#: A ``logit_bias`` key: a token id, as JSON object keys are strings.
TokenIdKey = Annotated[str, Field(pattern=r"^[0-9]+$")]


def messages_schema(roles: tuple[str, ...]) -> dict[str, Any]:
    """The JSON schema a request's ``messages`` are documented with: ``{role, content}``, the
    content a string or text parts. Documented only: they are checked when read, in words that
    name the message."""
    part = {
        "type": "object",
        "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
        "required": ["type", "text"],
    }
    message = {
        "type": "object",
        "properties": {
            "role": {"enum": list(roles)},
            "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": part}]},
        },
        "required": ["role", "content"],
    }
    return {"type": "array", "items": message, "minItems": 1}


class SamplingParams(Lenient):
    """The sampling fields, declared once for every request type (chat, completions,
    messages). OpenAI's clients send the last four in ``extra_body``, as vLLM and llama-server
    take them."""

    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    # The sampler's seed is 64 bits; a negative one (some clients' "random") is refused: leave
    # it out for a random seed.
    seed: Annotated[int, Field(ge=0, le=2**64 - 1)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logit_bias: dict[TokenIdKey, Annotated[float, Field(ge=-100, le=100)]] | None = None
    top_k: Annotated[int, Field(ge=0, le=MAX_INT)] | None = None
    min_p: Annotated[float, Field(ge=0, le=1)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0, le=100)] | None = None

    @field_validator("logit_bias", mode="before")
    @classmethod
    def token_id_keys(cls, value: Any) -> Any:
        """Each key a token id, in words that name it (the key pattern's error would not)."""
        for key in value if isinstance(value, dict) else ():
            if not (isinstance(key, str) and key.isascii() and key.isdigit()):
                raise ValueError(f"keys must be token ids, got {key!r}")
            if int(key) > MAX_INT:
                raise ValueError(f"keys must be token ids, got {key} (above {MAX_INT})")
        return value

    def sampling_kwargs(
        self, choice: int, vocab_size: int, defaults: Mapping[str, float | None] | None = None
    ) -> dict[str, Any]:
        """The sampling keywords of ``Model.generate`` for choice ``choice`` of the request. A
        temperature or top_p left unset takes the server's ``defaults``; any other field left
        unset is passed as ``None``, which keeps the core's default."""
        defaults = defaults or {}
        temperature = (
            self.temperature if self.temperature is not None else defaults.get("temperature")
        )
        top_p = self.top_p if self.top_p is not None else defaults.get("top_p")
        if top_p == 0:  # the limit of a shrinking nucleus: the single likeliest token
            temperature, top_p = 0.0, None
        bias = {int(key): value for key, value in (self.logit_bias or {}).items()}
        check_token_ids(bias, vocab_size, "logit_bias")
        return {
            "temperature": temperature,
            "top_p": top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repetition_penalty": self.repetition_penalty,
            "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty,
            "logit_bias": bias or None,
            # Each choice its own stream of randomness, all reproducible from the request's seed.
            "seed": None if self.seed is None else (self.seed + choice) % 2**64,
        }


@dataclass(frozen=True)
class Constraint:
    """A request's structured output: ``Model.generate``'s keyword for it (``json_schema``,
    ``regex`` or ``grammar``), its value, and the request field it came from, which the error
    of a schema or grammar that does not compile names."""

    keyword: str
    value: Any
    param: str


def constrained(constraint: Constraint | None, create: Callable[[dict[str, Any]], T]) -> T:
    """``create(kwargs)`` with ``Model.generate``'s keyword for ``constraint`` in ``kwargs``; the
    error of a schema or grammar that does not compile is a 400 naming the request's field."""
    if constraint is None:
        return create({})
    try:
        return create({constraint.keyword: constraint.value})
    except InvalidArgumentError as exc:
        prefix = f"{constraint.keyword}: "
        if not str(exc).startswith(prefix):
            raise
        message = f"{constraint.param}: {str(exc).removeprefix(prefix)}"
        raise InvalidArgumentError(message, param=constraint.param) from exc


def one_constraint(*given: Constraint | None) -> Constraint | None:
    """The request's constraint: at most one of its fields may ask for one."""
    asked = [c for c in given if c is not None]
    if len(asked) > 1:
        names = " and ".join(c.param for c in asked)
        raise InvalidArgumentError(
            f"{names} cannot be combined: give one constraint", param=asked[-1].param
        )
    return asked[0] if asked else None


def json_schema_of(value: Any, param: str) -> dict[str, Any]:
    """A JSON Schema given in a request: an object."""
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"{param}: a JSON Schema must be an object", param=param)
    return value


def unsupported(param: str, what: str) -> NoReturn:
    """Refuses a request field asking for what this server does not do, naming it: a 400,
    never a 200 that quietly ignores it."""
    raise InvalidArgumentError(f"{param}: {what} is not supported by this server", param=param)


def check_token_ids(ids: Iterable[int], vocab_size: int, param: str) -> None:
    """Raises :class:`InvalidArgumentError` naming ``param`` for an id outside the
    vocabulary."""
    for token in ids:
        if not 0 <= token < vocab_size:
            raise InvalidArgumentError(
                f"{param}: {token} is not a token id of this model (its vocabulary has "
                f"{vocab_size})",
                param=param,
            )


def max_tokens_for(model: Model, prompt_tokens: int, asked: int | None, default: int) -> int:
    """The request's ``max_tokens``, checked against the context window: unset, ``default``
    or what the window has left, whichever is less. The one place the server settles both;
    they belong to the core."""
    check_context(model, prompt_tokens, asked)
    if asked is not None:
        return asked
    return max(min(default, model.context_length - prompt_tokens), 1)


# --- events of a generation --------------------------------------------------------------------


@dataclass
class Started:
    """A choice is about to generate; ``cached_tokens`` of its prompt came from the cache."""

    index: int
    prompt_ids: list[int]
    cached_tokens: int


@dataclass
class Delta:
    """A piece of a choice's text (possibly empty), with its token's log-probability when
    asked for, and the finish reason on the last one."""

    index: int
    text: str
    logprob: Any | None
    finish_reason: str | None


@dataclass
class Finished:
    """A choice is complete."""

    index: int
    completion: Completion


@dataclass
class Usage:
    """The request's tokens, sent after its last choice. A prompt shared by ``n`` choices
    counts once, with the cached tokens of its first choice."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


Event = Started | Delta | Finished | Usage


@dataclass
class Job:
    """One choice to generate: its index in the response, its prompt, and whether it is the
    first choice of that prompt (which counts the prompt in the usage)."""

    index: int
    prompt_ids: list[int]
    first_of_prompt: bool


async def generate(
    scheduler: Scheduler,
    jobs: list[Job],
    admitted: list[Admitted],
    is_disconnected: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncIterator[Event]:
    """The events of a request's choices, one choice after the other, then its usage: the one
    source both the streamed and the whole response are built from."""
    prompt_tokens = completion_tokens = cached = 0
    for job, place in zip(jobs, admitted, strict=True):
        yield Started(job.index, job.prompt_ids, place.stream.cached_tokens)
        async for chunk in scheduler.stream(place.ticket, place.stream, is_disconnected):
            yield Delta(job.index, chunk.text, chunk.logprob, chunk.finish_reason)
        done = place.stream.completion
        if done is None:
            raise InternalError("a generation ended without its result")
        completion_tokens += done.usage.completion_tokens
        if job.first_of_prompt:
            prompt_tokens += len(job.prompt_ids)
            cached += done.usage.cached_tokens
        yield Finished(job.index, done)
    yield Usage(prompt_tokens, completion_tokens, cached)


# --- server-sent events ------------------------------------------------------------------------


def sse_data(payload: BaseModel | dict[str, Any]) -> str:
    """One unnamed event (OpenAI's streams)."""
    return f"data: {_json(payload)}\n\n"


def sse_event(event: str, payload: BaseModel | dict[str, Any]) -> str:
    """One named event (Anthropic's streams)."""
    return f"event: {event}\ndata: {_json(payload)}\n\n"


def _json(payload: BaseModel | dict[str, Any]) -> str:
    if isinstance(payload, BaseModel):
        payload = dump(payload)
    return json.dumps(payload, ensure_ascii=False)


def dump(model: BaseModel) -> dict[str, Any]:
    """A response model as JSON data (see :class:`Response` for the fields left out)."""
    return model.model_dump(mode="json", exclude_unset=True)


def event_stream(body: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


#: How a route documents its streamed answer in ``/openapi.json``: the schema of one event
#: (OpenAPI 3.1 has a stream's ``schema`` describe each of its events).
SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "description": "One server-sent event, with `stream: true`: its data a JSON "
                    "chunk of the answer (OpenAI's stream ends with `data: [DONE]`), named by "
                    "its event in Anthropic's.",
                    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
                    "required": ["data"],
                }
            }
        }
    }
}
