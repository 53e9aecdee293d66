// Drives tether's /ai-sdk/chat endpoint with the real Vercel AI SDK (`ai`): the same `AbstractChat`
// and `DefaultChatTransport` that React's `useChat` is built on, with a plain in-memory state.
//
//   node ai_sdk_chat.mjs BASE_URL
//
// The server is tests/server/_served.py (a scripted model whose gates the script opens over HTTP).
// Scenarios: a stop during the text answer, a stop during a tool call, each followed by the next
// message on the same chat; a tool that requires approval, approved and then rejected with the
// SDK's own addToolApprovalResponse (sent automatically); one JSON object with what the client saw
// goes to stdout.
import { AbstractChat, DefaultChatTransport, lastAssistantMessageIsCompleteWithApprovalResponses } from "ai";

const base = process.argv[2];
setTimeout(() => { console.error("ai_sdk_chat.mjs: watchdog fired"); process.exit(2); }, 60_000).unref();

class MemoryState {
  constructor() { this._status = "ready"; this.error = undefined; this.messages = []; this.waiters = []; }
  get status() { return this._status; }
  set status(value) { this._status = value; this.changed(); }
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

async function approval() {
  const finishes = [];
  const chat = new Chat({
    id: `ai-sdk-approval-${Date.now()}`,
    transport: new DefaultChatTransport({ api: `${base}/ai-sdk/chat` }),
    sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses,
    onFinish: ({ message, isAbort, isError }) => {
      finishes.push({ isAbort, isError, metadata: message.metadata ?? null });
      chat.memory.changed();
    },
  });
  const sendPart = (m) => m.parts.find((p) => p.type === "tool-send");
  const ask = async (to, turnText) => {
    await post("/_test/script", { turns: [[turnText, `@tool:send:{"to": "${to}"}`]] });
    await chat.sendMessage({ text: `message ${to}` });
    return structuredClone(last(chat));
  };
  const answer = async (approval) => {
    const count = finishes.length;
    await chat.addToolApprovalResponse(approval);  // sent automatically: every approval answered
    await chat.memory.until(() => chat.status === "error" || (finishes.length > count && chat.status === "ready"));
    return structuredClone(last(chat));
  };
  const askedAda = await ask("ada", "Sending.");
  const approved = await answer({ id: sendPart(askedAda).approval.id, approved: true });
  const askedBob = await ask("bob", "Sending again.");
  const rejected = await answer({ id: sendPart(askedBob).approval.id, approved: false, reason: "not bob" });
  return { chatId: chat.id, askedAda, approved, askedBob, rejected, finishes, status: chat.status, error: chat.error?.message ?? null };
}

const result = {
  text: await scenario("text", ["Hel", "lo", "@gate:ai1", " world"], "ai1", (m) => text(m) === "Hello"),
  tool: await scenario(
    "tool", ["Let me look.", "@tool:lookup:{\"query\": \"tides\"}"], "tool",
    (m) => m.parts.some((p) => p.type === "tool-lookup" && p.state === "input-available"),
  ),
  approval: await approval(),
};
console.log(JSON.stringify(result));
