// Drives tether's /ai-sdk/chat endpoint with the real Vercel AI SDK (`ai`): the same `AbstractChat`
// and `DefaultChatTransport` that React's `useChat` is built on, with a plain in-memory state.
//
//   node ai_sdk_chat.mjs BASE_URL
//
// The server is tests/server/_served.py (a scripted model whose gates the script opens over HTTP).
// Scenarios: a stop during the text answer, a stop during a tool call, each followed by the next
// message on the same chat; one JSON object with what the client saw goes to stdout.
import { AbstractChat, DefaultChatTransport } from "ai";

const base = process.argv[2];
setTimeout(() => { console.error("ai_sdk_chat.mjs: watchdog fired"); process.exit(2); }, 60_000).unref();

class MemoryState {
  constructor() { this.status = "ready"; this.error = undefined; this.messages = []; this.waiters = []; }
  changed() { this.waiters = this.waiters.filter(({ check, resolve }) => !(check() && (resolve(), true))); }
  pushMessage(m) { this.messages = this.messages.concat(m); this.changed(); }
  popMessage() { this.messages = this.messages.slice(0, -1); this.changed(); }
  replaceMessage(i, m) { this.messages = [...this.messages.slice(0, i), m, ...this.messages.slice(i + 1)]; this.changed(); }
  snapshot(value) { return structuredClone(value); }
  until(check) { return check() ? Promise.resolve() : new Promise((resolve) => this.waiters.push({ check, resolve })); }
}

class Chat extends AbstractChat {
  constructor(options) { const state = new MemoryState(); super({ ...options, state }); this.memory = state; }
}

const post = (path, body) => fetch(base + path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body ?? {}) }).then((r) => r.json());
const get = (path) => fetch(base + path).then((r) => r.json());
const text = (m) => m.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
const last = (chat) => chat.messages[chat.messages.length - 1];

async function scenario(name, turn, gate, reachedWhen) {
  await post("/_test/script", { turns: [turn] });
  const finishes = [];
  const chat = new Chat({
    id: `ai-sdk-${name}-${Date.now()}`,
    transport: new DefaultChatTransport({ api: `${base}/ai-sdk/chat` }),
    onFinish: ({ message, isAbort, isError }) => finishes.push({ isAbort, isError, metadata: message.metadata ?? null }),
  });
  const sending = chat.sendMessage({ text: "hi" });
  await chat.memory.until(() => chat.messages.length === 2 && reachedWhen(last(chat)));
  await get(`/_test/gates/${gate}/reached`);   // the server's stream is parked at the gate
  const stoppedMessage = structuredClone(last(chat));
  await chat.stop();                             // useChat's stop(): aborts the fetch
  await sending;
  const afterStop = { status: chat.status, messages: structuredClone(chat.messages) };
  await post(`/_test/gates/${gate}/release`);
  await chat.sendMessage({ text: "go on" });     // the next message on the same chat (thread)
  return {
    chatId: chat.id,
    stoppedMessage,
    afterStop,
    finishes,
    final: { status: chat.status, error: chat.error?.message ?? null, messages: chat.messages },
  };
}

const result = {
  text: await scenario("text", ["Hel", "lo", "@gate:ai1", " world"], "ai1", (m) => text(m) === "Hello"),
  tool: await scenario(
    "tool", ["Let me look.", "@tool:lookup:{\"query\": \"tides\"}"], "tool",
    (m) => m.parts.some((p) => p.type === "tool-lookup" && p.state === "input-available"),
  ),
};
console.log(JSON.stringify(result));
