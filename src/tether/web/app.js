// tether chat — a plain ES module: no framework, no build step.
//
// How it talks to the server (docs/ui.md has the long version):
// - A message starts a run with POST /threads/{id}/runs/stream and `on_disconnect: "continue"`;
//   the SSE body is read with fetch + ReadableStream (EventSource cannot POST).
// - Stop (button or Esc) is POST /threads/{id}/stop. The stream then ends with `run_finished`
//   (`cancelled`), and the thread is re-read: the partial answer comes back marked `stopped`.
// - Continue is POST .../runs/stream with `resume: true`.
// - The run in flight (its id, the last `seq`, and what it has shown) is kept in sessionStorage, so
//   after a reload the page renders it again and re-joins with GET .../runs/{run_id}/stream and
//   `Last-Event-ID`: nothing is lost or repeated. A dropped connection re-joins the same way.
// Every piece of model or user text goes into the page with `textContent`, never as HTML.

const $ = (selector) => document.querySelector(selector);

const els = {
  layout: $("#layout"),
  sidebar: $("#sidebar"),
  toggleSidebar: $("#toggle-sidebar"),
  newChat: $("#new-chat"),
  threadList: $("#thread-list"),
  threadsEmpty: $("#threads-empty"),
  appPicker: $("#app-picker"),
  appSelect: $("#app-select"),
  keyButton: $("#key-button"),
  title: $("#chat-title"),
  status: $("#run-status"),
  messages: $("#messages"),
  empty: $("#empty"),
  form: $("#composer"),
  input: $("#composer-input"),
  send: $("#send"),
  stop: $("#stop"),
  keyDialog: $("#key-dialog"),
  keyForm: $("#key-form"),
  keyInput: $("#key-input"),
  keyCancel: $("#key-cancel"),
  toast: $("#toast"),
};

const KEY_STORAGE = "tether:api-key";
const LIVE_PREFIX = "tether:live:"; // sessionStorage key prefix: the thread's run in flight
const RECONNECTS = 3; // times a dropped stream is re-joined before giving up

const ui = {
  info: null, // GET /info: apps, auth
  threadId: null, // the open thread (mirrored in location.hash)
  thread: null, // the last GET /threads/{id}
  completeIds: new Set(), // messages the thread state holds as complete: their deltas are old news
  live: null, // the run shown live, see newLive()
  stream: null, // AbortController of the open SSE request
  busy: false,
  notes: new Map(), // thread id -> an error note to show under the conversation
};

class ApiError extends Error {
  constructor(status, type, message, extra = {}) {
    super(message);
    this.status = status;
    this.type = type;
    this.extra = extra;
  }
}

// ---------------------------------------------------------------- HTTP

async function api(path, { method = "GET", body, signal, headers = {} } = {}) {
  const h = { Accept: "application/json", ...headers };
  if (body !== undefined) h["Content-Type"] = "application/json";
  const key = localStorage.getItem(KEY_STORAGE);
  if (key) h.Authorization = `Bearer ${key}`;
  // Paths are resolved against the page, so the UI also works where the server is mounted
  // under a prefix (e.g. /tether/ inside your own FastAPI app).
  const res = await fetch(new URL(path.replace(/^\//, ""), document.baseURI), {
    method,
    headers: h,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  if (res.ok) return res;
  let error = {};
  try {
    error = (await res.json()).error ?? {};
  } catch {
    // not JSON: keep the status text
  }
  if (res.status === 401) askForKey();
  const { type, message, ...extra } = error;
  throw new ApiError(res.status, type ?? "error", message ?? res.statusText, extra);
}

async function getJSON(path) {
  return (await api(path)).json();
}

// Server-sent events from a fetch response, in batches (everything one network read brought).
async function* sseBatches(res) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      const batch = [];
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const event = parseSSE(block);
        if (event) batch.push(event);
      }
      if (batch.length) yield batch;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function parseSSE(block) {
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (!data.length) return null; // a comment (ping)
  try {
    return JSON.parse(data.join("\n"));
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- the run in flight

function newLive(threadId, runId) {
  return {
    threadId,
    runId,
    seq: -1, // the last event applied; a re-join asks for what follows
    order: [], // live message ids, in arrival order
    messages: {}, // id -> {role, content, status, done}
    tools: {}, // tool_call_id -> {name, arguments, status, content, messageId}
    finished: false,
  };
}

function saveLive() {
  const live = ui.live;
  if (!live || !live.runId) return;
  sessionStorage.setItem(LIVE_PREFIX + live.threadId, JSON.stringify(live));
}

function loadLive(threadId) {
  try {
    return JSON.parse(sessionStorage.getItem(LIVE_PREFIX + threadId) ?? "null");
  } catch {
    return null;
  }
}

function dropLive(threadId) {
  sessionStorage.removeItem(LIVE_PREFIX + threadId);
}

function liveMessage(id) {
  const live = ui.live;
  let m = live.messages[id];
  if (!m) {
    // A resumed answer continues a message the page already shows: start from its text.
    const shown = messageEl(id)?.querySelector(".text")?.textContent ?? "";
    m = live.messages[id] = { role: "assistant", content: shown, status: "complete", done: false };
    live.order.push(id);
  }
  return m;
}

function lastLiveAssistant() {
  const ids = ui.live?.order ?? [];
  return ids.length ? ids[ids.length - 1] : null;
}

const TOOL_STATUS = { complete: "done", error: "error", cancelled: "cancelled" };

function applyEvent(ev) {
  const live = ui.live;
  if (!live || ev.seq <= live.seq) return; // replayed after a reconnect
  live.seq = ev.seq;
  if (ev.path && ev.path.length) return; // a child run's event (sub-agent, subgraph)
  switch (ev.type) {
    case "run_started":
      setBusy(true);
      break;
    case "message_delta": {
      if (ev.role !== "assistant" || ui.completeIds.has(ev.message_id)) break;
      const m = liveMessage(ev.message_id);
      m.content += ev.content ?? "";
      renderLiveMessage(ev.message_id);
      break;
    }
    case "message": {
      const msg = ev.message;
      if (msg.role === "assistant") {
        const m = liveMessage(msg.id);
        Object.assign(m, { content: msg.content, status: msg.status, done: true });
        renderLiveMessage(msg.id);
      } else if (msg.role === "tool" && live.tools[msg.tool_call_id]) {
        const t = live.tools[msg.tool_call_id];
        if (t.status === "running") t.status = TOOL_STATUS[msg.status] ?? "done";
        t.content = msg.content;
        renderLiveTool(msg.tool_call_id);
      } else if (msg.role === "user" && !messageEl(msg.id)) {
        appendMessage(msg);
      }
      break;
    }
    case "tool_call_started":
      live.tools[ev.tool_call_id] = {
        name: ev.name,
        arguments: ev.arguments,
        status: "running",
        content: "",
        messageId: lastLiveAssistant(),
      };
      renderLiveTool(ev.tool_call_id);
      break;
    case "tool_call_finished": {
      const t = (live.tools[ev.tool_call_id] ??= {
        name: ev.name,
        arguments: "{}",
        messageId: lastLiveAssistant(),
      });
      t.status = TOOL_STATUS[ev.status] ?? "done";
      t.content = ev.content ?? "";
      renderLiveTool(ev.tool_call_id);
      break;
    }
    case "run_finished":
      live.finished = true;
      live.status = ev.status;
      if (ev.status === "failed") {
        ui.notes.set(live.threadId, `The run failed: ${ev.error ?? "unknown error"}`);
      }
      break;
    default:
      break;
  }
}

// Read a run's SSE response to its end, re-joining after a dropped connection.
async function follow(res, controller) {
  const live = ui.live;
  let attempts = 0;
  for (;;) {
    try {
      for await (const batch of sseBatches(res)) {
        for (const ev of batch) applyEvent(ev);
        saveLive();
        attempts = 0;
        if (live.finished) break;
      }
    } catch (err) {
      if (controller.signal.aborted) return;
      console.warn("stream interrupted", err);
    }
    if (controller.signal.aborted || ui.live !== live) return;
    if (live.finished) break;
    if (++attempts > RECONNECTS) {
      toast("Lost the connection to the run. Reload to re-join it.");
      setBusy(false);
      return;
    }
    try {
      res = await joinRequest(live, controller);
    } catch (err) {
      if (controller.signal.aborted) return;
      await new Promise((r) => setTimeout(r, 500 * attempts)); // back off, then retry
    }
  }
  await finishLive(live);
}

function joinRequest(live, controller) {
  const path = `/threads/${encodeURIComponent(live.threadId)}/runs/${encodeURIComponent(live.runId)}/stream`;
  return api(path, {
    signal: controller.signal,
    headers: { "Last-Event-ID": String(live.seq), Accept: "text/event-stream" },
  });
}

async function finishLive(live) {
  dropLive(live.threadId);
  if (ui.live === live) {
    ui.live = null;
    ui.stream = null;
    setBusy(false);
  }
  if (ui.threadId === live.threadId) await openThread(live.threadId, { quiet: true });
  refreshThreads();
}

async function startRun(body) {
  if (ui.busy) return;
  let threadId = ui.threadId;
  try {
    if (!threadId) {
      const app = ui.info?.apps?.length > 1 ? els.appSelect.value : undefined;
      const thread = await (await api("/threads", { method: "POST", body: { app } })).json();
      threadId = thread.thread_id;
      ui.threadId = threadId;
      ui.thread = { ...thread, metadata: { ...thread.metadata, title: els.title.textContent } };
      history.replaceState(null, "", `#${threadId}`);
    }
  } catch (err) {
    toast(err.message);
    return;
  }
  ui.notes.delete(threadId);
  const controller = new AbortController();
  ui.stream?.abort();
  ui.stream = controller;
  ui.live = newLive(threadId, null);
  setBusy(true);
  showWaiting();
  let res;
  try {
    res = await api(`/threads/${encodeURIComponent(threadId)}/runs/stream`, {
      method: "POST",
      body: { ...body, on_disconnect: "continue" },
      signal: controller.signal,
      headers: { Accept: "text/event-stream" },
    });
  } catch (err) {
    ui.live = null;
    setBusy(false);
    hideWaiting();
    if (!controller.signal.aborted) toast(err.message);
    if (err.status === 409) await openThread(threadId, { quiet: true });
    return;
  }
  ui.live.runId = res.headers.get("X-Tether-Run-Id");
  saveLive();
  refreshThreads();
  await follow(res, controller);
}

async function stopRun() {
  if (!ui.threadId || !ui.busy) return;
  els.stop.disabled = true;
  try {
    await api(`/threads/${encodeURIComponent(ui.threadId)}/stop`, { method: "POST" });
  } catch (err) {
    toast(err.message);
  } finally {
    els.stop.disabled = false;
  }
}

// ---------------------------------------------------------------- rendering

function messageEl(id) {
  return els.messages.querySelector(`[data-message-id="${CSS.escape(id)}"]`);
}

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c) el.append(c);
  return el;
}

function nearBottom() {
  const m = els.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 120;
}

function scrollDown(force = false) {
  if (force || nearBottom()) els.messages.scrollTop = els.messages.scrollHeight;
}

function appendMessage(msg, { animate = true } = {}) {
  els.empty.hidden = true;
  const el = buildMessage(msg);
  if (animate) el.classList.add("enter");
  els.messages.append(el);
  return el;
}

function buildMessage(msg) {
  const isUser = msg.role === "user";
  const bubble = h("div", { class: "bubble" });
  bubble.append(h("div", { class: "text", text: msg.content ?? "" }));
  if (!isUser) bubble.append(h("div", { class: "tools" })); // a model writes, then calls tools
  bubble.append(h("div", { class: "meta" }));
  const el = h(
    "article",
    {
      class: `msg msg-${isUser ? "user" : "assistant"}`,
      "data-message-id": msg.id,
      "data-role": msg.role,
      "data-status": msg.status ?? "complete",
      "aria-label": isUser ? "You said" : "Assistant",
    },
    isUser ? null : h("div", { class: "avatar", "aria-hidden": "true", text: "t" }),
    bubble,
  );
  if (msg.role === "assistant" && msg.status === "stopped") markStopped(el);
  return el;
}

function markStopped(el) {
  el.dataset.status = "stopped";
  const meta = el.querySelector(".meta");
  if (!meta.querySelector(".stopped-marker")) {
    meta.prepend(h("span", { class: "stopped-marker", text: "■ Stopped" }));
  }
}

function addContinue(el) {
  const meta = el.querySelector(".meta");
  if (meta.querySelector(".continue-btn")) return;
  meta.append(
    h("button", {
      type: "button",
      class: "btn btn-ghost continue-btn",
      text: "Continue ↵",
      "aria-label": "Continue the stopped answer",
      onclick: () => startRun({ resume: true }),
    }),
  );
}

function showWaiting() {
  hideWaiting();
  const el = buildMessage({ id: "__waiting__", role: "assistant", content: "" });
  el.classList.add("waiting");
  els.messages.append(el);
  els.empty.hidden = true;
  scrollDown(true);
}

function hideWaiting() {
  messageEl("__waiting__")?.remove();
}

function renderLiveMessage(id) {
  const m = ui.live.messages[id];
  const stick = nearBottom();
  let el = messageEl(id);
  if (!el) {
    hideWaiting();
    el = appendMessage({ id, role: "assistant", content: "" });
  }
  el.querySelector(".text").textContent = m.content;
  el.classList.toggle("streaming", !m.done);
  el.dataset.status = m.status;
  if (m.status === "stopped") markStopped(el);
  if (stick) scrollDown(true);
}

function toolCard(id, t) {
  const card = h(
    "details",
    { class: "tool-card", "data-tool-call-id": id, "data-status": t.status },
    h(
      "summary",
      {},
      h("span", { class: "tool-icon", "aria-hidden": "true", text: "⚙" }),
      h("span", { class: "tool-name", text: t.name }),
      h("span", { class: "tool-status", text: t.status }),
    ),
    h(
      "div",
      { class: "tool-body" },
      h("span", { class: "muted small", text: "Arguments" }),
      h("pre", { class: "tool-args", text: prettyJSON(t.arguments) }),
      h("span", { class: "muted small tool-result-label", text: "Result", hidden: !t.content }),
      h("pre", { class: "tool-result", text: t.content ?? "", hidden: !t.content }),
    ),
  );
  card.querySelector("summary").setAttribute("aria-label", `Tool ${t.name}: ${t.status}`);
  return card;
}

function prettyJSON(text) {
  try {
    return JSON.stringify(JSON.parse(text || "{}"), null, 2);
  } catch {
    return text;
  }
}

function placeTool(id, t) {
  const existing = els.messages.querySelector(`[data-tool-call-id="${CSS.escape(id)}"]`);
  const card = toolCard(id, t);
  if (existing) {
    card.open = existing.open;
    existing.replaceWith(card);
    return;
  }
  let host = t.messageId ? messageEl(t.messageId) : null;
  if (!host) {
    hideWaiting();
    host = appendMessage({ id: `tools-${id}`, role: "assistant", content: "" });
  }
  host.querySelector(".tools").append(card);
}

function renderLiveTool(id) {
  placeTool(id, ui.live.tools[id]);
  scrollDown();
}

function renderThread(thread) {
  for (const el of [...els.messages.children]) if (el !== els.empty) el.remove();
  const messages = thread.messages ?? [];
  ui.completeIds = new Set(messages.filter((m) => m.status === "complete").map((m) => m.id));
  const results = new Map(messages.filter((m) => m.role === "tool").map((m) => [m.tool_call_id, m]));
  const approval = pendingApproval(thread);
  const waiting = new Set((approval?.tool_calls ?? []).map((c) => c.id));
  let lastAssistant = null;
  for (const msg of messages) {
    if (msg.role === "system" || msg.role === "tool") continue;
    const el = appendMessage(msg, { animate: false });
    if (msg.role === "assistant") {
      lastAssistant = { el, msg };
      for (const call of msg.tool_calls ?? []) {
        const result = results.get(call.id);
        const status = result
          ? result.metadata?.rejected
            ? "rejected"
            : (TOOL_STATUS[result.status] ?? "done")
          : waiting.has(call.id)
            ? "awaiting approval"
            : "running";
        placeTool(call.id, {
          name: call.name,
          arguments: call.arguments,
          status,
          content: result?.content ?? "",
          messageId: msg.id,
        });
      }
    } else {
      lastAssistant = null;
    }
  }
  if (lastAssistant && lastAssistant.msg.status === "stopped" && !thread.active_run_id) {
    addContinue(lastAssistant.el);
  }
  if (approval) els.messages.append(approvalCard(approval));
  els.empty.hidden = messages.length > 0;
  const note = ui.notes.get(thread.thread_id);
  if (note) els.messages.append(h("p", { class: "error-note", role: "alert", text: note }));
}

// A run paused for tool approval (`@tool(requires_approval=True)`): the thread's `interrupt`.
function pendingApproval(thread) {
  const value = thread.interrupt?.value;
  if (thread.active_run_id || value?.type !== "tool_approval") return null;
  return value;
}

function approvalCard(approval) {
  const decide = (decision) => startRun({ command: { resume: decision } });
  return h(
    "section",
    { class: "approval-card", role: "group", "aria-label": "Tool approval" },
    h("p", { class: "approval-title", text: "The agent wants to run:" }),
    ...approval.tool_calls.map((call) =>
      h(
        "div",
        { class: "approval-call", "data-tool-call-id": call.id },
        h("span", { class: "tool-name", text: call.name }),
        h("pre", { class: "tool-args", text: JSON.stringify(call.arguments, null, 2) }),
      ),
    ),
    h(
      "div",
      { class: "approval-actions" },
      h("button", {
        type: "button",
        class: "btn approve-btn",
        text: "Approve",
        onclick: () => decide("approve"),
      }),
      h("button", {
        type: "button",
        class: "btn btn-ghost reject-btn",
        text: "Reject",
        onclick: () => decide("reject"),
      }),
    ),
  );
}

function overlayLive() {
  const live = ui.live;
  for (const id of live.order) renderLiveMessage(id);
  for (const id of Object.keys(live.tools)) placeTool(id, live.tools[id]);
}

function setBusy(busy) {
  ui.busy = busy;
  els.send.hidden = busy;
  els.stop.hidden = !busy;
  els.messages.setAttribute("aria-busy", String(busy));
  els.status.textContent = busy ? "Generating…" : "";
  els.status.classList.toggle("live", busy);
  updateSend();
  if (!busy) {
    for (const el of els.messages.querySelectorAll(".streaming")) el.classList.remove("streaming");
    hideWaiting();
  }
}

function updateSend() {
  els.send.disabled = ui.busy || !els.input.value.trim();
}

function setTitle(thread) {
  const title = thread?.metadata?.title || "New chat";
  els.title.textContent = title;
  document.title = thread ? `${title} · tether` : "tether";
}

// ---------------------------------------------------------------- threads

async function refreshThreads() {
  let threads;
  try {
    threads = await getJSON("/threads?limit=100");
  } catch {
    return;
  }
  els.threadList.replaceChildren(
    ...threads.map((t) =>
      h(
        "li",
        {},
        h(
          "button",
          {
            type: "button",
            class: "thread-item",
            "data-thread-id": t.thread_id,
            "aria-current": t.thread_id === ui.threadId ? "page" : undefined,
            onclick: () => navigate(t.thread_id),
          },
          h("span", { class: "title", text: t.metadata?.title || "New chat" }),
          t.status === "busy"
            ? h("span", { class: "busy-dot", role: "img", "aria-label": "running" })
            : null,
        ),
      ),
    ),
  );
  els.threadsEmpty.hidden = threads.length > 0;
}

function navigate(threadId) {
  closeSidebar();
  if (threadId === ui.threadId) return;
  location.hash = threadId ? `#${encodeURIComponent(threadId)}` : "";
}

// The thread id in the location's hash. It is written percent-encoded (`navigate`), and browsers
// percent-encode what a hand-typed or linked hash holds, so it is always decoded once here.
function threadFromHash() {
  const raw = location.hash.slice(1);
  if (!raw) return null;
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw; // a stray "%" that is not an escape: the id as typed
  }
}

// Show a thread: its saved messages, then its run in flight (re-joined where it left off).
async function openThread(threadId, { quiet = false } = {}) {
  if (!quiet) {
    ui.stream?.abort(); // leaving a live stream is fine: the run continues on the server
    ui.stream = null;
    ui.live = null;
    setBusy(false);
  }
  ui.threadId = threadId;
  if (!threadId) {
    ui.thread = null;
    renderThread({ messages: [] });
    setTitle(null);
    markCurrent();
    els.input.focus();
    return;
  }
  let thread;
  try {
    thread = await getJSON(`/threads/${encodeURIComponent(threadId)}`);
  } catch (err) {
    if (err.status === 404) {
      toast("That conversation does not exist (or is not yours).");
      navigate(null);
    } else {
      toast(err.message);
    }
    return;
  }
  if (ui.threadId !== threadId) return;
  ui.thread = thread;
  setTitle(thread);
  markCurrent();
  if (ui.live && ui.live.threadId === threadId) {
    renderThread(thread);
    overlayLive();
    return;
  }
  renderThread(thread);
  if (!quiet) await rejoin(threadId);
  scrollDown(true);
}

async function rejoin(threadId) {
  let runs;
  try {
    runs = await getJSON(`/threads/${encodeURIComponent(threadId)}/runs?limit=5`);
  } catch {
    return;
  }
  const active = runs.find((r) => r.status === "running" || r.status === "pending");
  const saved = loadLive(threadId);
  if (!active) {
    dropLive(threadId);
    return;
  }
  const live = saved && saved.runId === active.run_id ? saved : newLive(threadId, active.run_id);
  const controller = new AbortController();
  ui.stream = controller;
  ui.live = live;
  setBusy(true);
  overlayLive();
  if (!live.order.length) showWaiting();
  let res;
  try {
    res = await joinRequest(live, controller);
  } catch (err) {
    if (!controller.signal.aborted) toast(err.message);
    ui.live = null;
    setBusy(false);
    return;
  }
  await follow(res, controller);
}

function markCurrent() {
  for (const b of els.threadList.querySelectorAll(".thread-item")) {
    if (b.dataset.threadId === ui.threadId) b.setAttribute("aria-current", "page");
    else b.removeAttribute("aria-current");
  }
}

// ---------------------------------------------------------------- chrome

let toastTimer = 0;
function toast(message) {
  els.toast.textContent = message;
  els.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    els.toast.hidden = true;
  }, 5000);
}

function askForKey() {
  if (els.keyDialog.open) return;
  els.keyInput.value = "";
  els.keyDialog.showModal();
}

function closeSidebar() {
  els.layout.classList.remove("sidebar-open");
  els.toggleSidebar.setAttribute("aria-expanded", "false");
}

function autoGrow() {
  els.input.style.height = "auto";
  els.input.style.height = `${Math.min(els.input.scrollHeight, 220)}px`;
}

function submit() {
  const text = els.input.value.trim();
  if (!text || ui.busy) return;
  els.input.value = "";
  autoGrow();
  updateSend();
  appendMessage({ id: `local-${Date.now()}`, role: "user", content: text });
  if (!ui.thread?.metadata?.title) setTitle({ metadata: { title: text } });
  for (const b of els.messages.querySelectorAll(".continue-btn")) b.remove();
  scrollDown(true);
  startRun({ input: { messages: [{ role: "user", content: text }] } });
}

function wire() {
  els.form.addEventListener("submit", (e) => {
    e.preventDefault();
    submit();
  });
  els.input.addEventListener("input", () => {
    autoGrow();
    updateSend();
  });
  els.input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    }
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && ui.busy && !els.keyDialog.open) {
      e.preventDefault();
      stopRun();
    }
  });
  els.stop.addEventListener("click", stopRun);
  els.newChat.addEventListener("click", () => {
    navigate(null);
    els.input.focus();
  });
  els.toggleSidebar.addEventListener("click", () => {
    const open = els.layout.classList.toggle("sidebar-open");
    els.toggleSidebar.setAttribute("aria-expanded", String(open));
  });
  els.keyButton.addEventListener("click", askForKey);
  els.keyCancel.addEventListener("click", () => els.keyDialog.close());
  els.keyForm.addEventListener("submit", () => {
    const key = els.keyInput.value.trim();
    if (key) localStorage.setItem(KEY_STORAGE, key);
    refreshThreads();
    openThread(ui.threadId);
  });
  window.addEventListener("hashchange", () => openThread(threadFromHash()));
}

async function main() {
  wire();
  try {
    ui.info = await getJSON("/info");
  } catch {
    ui.info = { apps: [], auth: false };
  }
  const apps = ui.info.apps ?? [];
  if (apps.length > 1) {
    els.appSelect.replaceChildren(...apps.map((a) => h("option", { value: a, text: a })));
    els.appPicker.hidden = false;
  }
  els.keyButton.hidden = !ui.info.auth;
  if (ui.info.auth && !localStorage.getItem(KEY_STORAGE)) askForKey();
  await refreshThreads();
  await openThread(threadFromHash());
  els.input.focus();
}

main();
