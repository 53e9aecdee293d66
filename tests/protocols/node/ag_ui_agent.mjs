// Drives tether's /ag-ui endpoint with the real AG-UI client (`@ag-ui/client`'s HttpAgent).
//
//   node ag_ui_agent.mjs BASE_URL
//
// The server is tests/server/_served.py (a scripted model whose gates the script opens over HTTP).
// Scenarios: `abortRun()` during the text answer, then the next message; a stop from elsewhere (the
// REST cancel endpoint) while the client listens, which must end the client's stream with
// RUN_FINISHED (outcome cancelled); a tool that requires approval, whose run ends with an AG-UI
// interrupt outcome, answered with `runAgent({resume})` (approved, then rejected). One JSON object
// with what the client saw goes to stdout.
import { HttpAgent } from "@ag-ui/client";

const base = process.argv[2];
setTimeout(() => { console.error("ag_ui_agent.mjs: watchdog fired"); process.exit(2); }, 60_000).unref();

const post = (path, body) => fetch(base + path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body ?? {}) }).then((r) => r.json());
const get = (path) => fetch(base + path).then((r) => r.json());

function watch(agent) {
  const seen = { events: [], errors: [], finished: [], waiters: [] };
  const changed = () => { seen.waiters = seen.waiters.filter(({ check, resolve }) => !(check() && (resolve(), true))); };
  seen.until = (check) => (check() ? Promise.resolve() : new Promise((resolve) => seen.waiters.push({ check, resolve })));
  seen.subscriber = {
    onEvent: ({ event }) => { seen.events.push(event); changed(); },
    onRunFailed: ({ error }) => { seen.errors.push(String(error?.message ?? error)); changed(); },
    onRunFinishedEvent: (params) => { seen.finished.push({ outcome: params.outcome, result: params.event.result ?? null }); },
  };
  return seen;
}

const userMessage = (id, content) => ({ id, role: "user", content });
const types = (seen) => seen.events.map((e) => e.type);

async function abortDuringText() {
  await post("/_test/script", { turns: [["Hel", "lo", "@gate:ag1", " world"]] });
  const threadId = `ag-ui-abort-${Date.now()}`;
  const agent = new HttpAgent({ url: `${base}/ag-ui`, threadId });
  agent.addMessage(userMessage("u1", "hi"));
  const seen = watch(agent);
  const running = agent.runAgent({}, seen.subscriber).then(() => "resolved", (e) => `rejected: ${e?.message ?? e}`);
  await seen.until(() => seen.events.filter((e) => e.type === "TEXT_MESSAGE_CONTENT").length === 2);
  await get("/_test/gates/ag1/reached");
  const runId = seen.events[0].runId;
  agent.abortRun();                                   // the client's stop: aborts the fetch
  const settled = await running;
  await post("/_test/gates/ag1/release");
  const stopped = { runId, settled, types: types(seen), messages: structuredClone(agent.messages) };

  agent.addMessage(userMessage("u2", "go on"));
  const next = watch(agent);
  await agent.runAgent({}, next.subscriber);
  return { threadId, stopped, next: { types: types(next), finished: next.finished, errors: next.errors, messages: agent.messages } };
}

async function stopFromElsewhere() {
  await post("/_test/script", { turns: [["Par", "tial", "@gate:ag2", " never"]] });
  const threadId = `ag-ui-cancel-${Date.now()}`;
  const agent = new HttpAgent({ url: `${base}/ag-ui`, threadId });
  agent.addMessage(userMessage("u1", "hi"));
  const seen = watch(agent);
  const running = agent.runAgent({}, seen.subscriber);
  await seen.until(() => seen.events.some((e) => e.type === "TEXT_MESSAGE_CONTENT" && e.delta === "tial"));
  await get("/_test/gates/ag2/reached");
  const runId = seen.events[0].runId;
  const cancel = await fetch(`${base}/threads/${threadId}/runs/${runId}/cancel?wait=true&reason=stopped+elsewhere`, { method: "POST" });
  await running;                                      // the client's stream ends normally
  await post("/_test/gates/ag2/release");
  return { threadId, runId, cancelStatus: cancel.status, types: types(seen), last: seen.events.at(-1), finished: seen.finished, errors: seen.errors, messages: agent.messages };
}

async function approval() {
  const threadId = `ag-ui-approval-${Date.now()}`;
  const agent = new HttpAgent({ url: `${base}/ag-ui`, threadId });
  const ask = async (id, to) => {
    await post("/_test/script", { turns: [["Sending.", `@tool:send:{"to": "${to}"}`]] });
    agent.addMessage(userMessage(id, `message ${to}`));
    const seen = watch(agent);
    await agent.runAgent({}, seen.subscriber);
    return { types: types(seen), finished: seen.finished, errors: seen.errors, pending: structuredClone(agent.pendingInterrupts) };
  };
  const answer = async (resume) => {
    const seen = watch(agent);
    await agent.runAgent({ resume }, seen.subscriber);
    return { types: types(seen), finished: seen.finished, errors: seen.errors, pending: structuredClone(agent.pendingInterrupts), events: seen.events };
  };
  const askedAda = await ask("u1", "ada");
  const approved = await answer([{ interruptId: askedAda.pending[0].id, status: "resolved", payload: { approved: true } }]);
  const askedBob = await ask("u2", "bob");
  let unanswered = null;                               // the client itself refuses a resume that leaves one out
  try { await agent.runAgent({}, watch(agent).subscriber); } catch (e) { unanswered = String(e?.message ?? e); }
  const rejected = await answer([{ interruptId: askedBob.pending[0].id, status: "resolved", payload: { approved: false, reason: "not bob" } }]);
  return { threadId, askedAda, approved, askedBob, unanswered, rejected, messages: agent.messages };
}

console.log(JSON.stringify({ abort: await abortDuringText(), elsewhere: await stopFromElsewhere(), approval: await approval() }));
