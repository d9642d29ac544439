// The live call board: open calls per queue and the calls themselves, kept current by the
// rooms route's live-answer stream (Server-Sent Events). An EventSource cannot send the
// X-User-Id / X-Auth-Token headers, so the stream is read with fetch and parsed here.
// All data reaches the page through textContent: never as markup.
"use strict";

(() => {
  const API = "/api/v1/voip/rooms";
  const LOGIN_KEY = "voipRoomsBoard.login"; // sessionStorage: forgotten when the tab closes
  // As many calls as the server gives (it clamps count to its maximum): the longest waiting.
  const COUNT = 500;
  const FIELDS = { ts: 1, queue: 1, direction: 1, "servedBy.username": 1 };
  const WARN_MS = 2 * 60 * 1000;
  const ALERT_MS = 5 * 60 * 1000;
  const FIRST_DELAY_MS = 1000; // reconnection time until the server's retry: says otherwise
  const MAX_DELAY_MS = 30 * 1000;
  const SILENCE_MS = 45 * 1000; // keep-alives come at least every 15 s: a dead link otherwise
  const MAX_BUFFER = 32 * 1024 * 1024; // an unterminated line longer than this is not SSE
  const NO_QUEUE = "\u0000none"; // the tile of calls without a queue (outbound calls)
  const DIRECTIONS = new Map([
    ["inbound", "In"],
    ["outbound", "Out"],
  ]);

  // --- Server-Sent Events: the WHATWG "event stream interpretation", fed decoded text ------

  class SseParser {
    // onEvent({type, data, id}) for each dispatched event; onRetry(ms) for a retry: field;
    // onComment(text) for a comment line (keep-alives).
    constructor({ onEvent, onRetry = () => {}, onComment = () => {} }) {
      this.onEvent = onEvent;
      this.onRetry = onRetry;
      this.onComment = onComment;
      this.buffer = "";
      this.started = false; // a leading BOM is dropped once
      this.skipLF = false; // the last chunk ended in CR: a LF opening the next one ends nothing
      this.data = [];
      this.type = "";
      this.lastEventId = "";
    }

    push(chunk) {
      if (this.skipLF && chunk.length > 0) {
        if (chunk[0] === "\n") chunk = chunk.slice(1);
        this.skipLF = false;
      }
      let text = this.buffer + chunk;
      if (!this.started && text.length > 0) {
        this.started = true;
        if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      }
      let start = 0;
      let cr = text.indexOf("\r");
      let lf = text.indexOf("\n");
      while (cr >= 0 || lf >= 0) {
        const end = cr < 0 ? lf : lf < 0 ? cr : Math.min(cr, lf);
        this.line(text.slice(start, end));
        if (end === cr && end + 1 === text.length) {
          this.skipLF = true; // CR LF split between two chunks
          start = end + 1;
          break;
        }
        start = end === cr && text[end + 1] === "\n" ? end + 2 : end + 1;
        if (cr >= 0 && cr < start) cr = text.indexOf("\r", start);
        if (lf >= 0 && lf < start) lf = text.indexOf("\n", start);
      }
      this.buffer = text.slice(start);
      if (this.buffer.length > MAX_BUFFER) throw new Error("an event stream line is too long");
    }

    // The end of the stream: an event not closed by a blank line is discarded, as a browser does.
    end() {
      this.buffer = "";
      this.data = [];
      this.type = "";
    }

    line(line) {
      if (line === "") {
        this.dispatch();
        return;
      }
      if (line[0] === ":") {
        this.onComment(line.slice(1).trim());
        return;
      }
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
      if (field === "data") this.data.push(value);
      else if (field === "event") this.type = value;
      else if (field === "id" && !value.includes("\u0000")) this.lastEventId = value;
      else if (field === "retry" && /^[0-9]+$/.test(value)) this.onRetry(Number(value));
    }

    dispatch() {
      const data = this.data;
      const type = this.type || "message";
      this.data = [];
      this.type = "";
      if (data.length === 0) return;
      this.onEvent({ type, data: data.join("\n"), id: this.lastEventId });
    }
  }

  // --- formatting -------------------------------------------------------------------------

  const two = (n) => String(n).padStart(2, "0");

  function formatWait(ms) {
    if (!Number.isFinite(ms)) return "—";
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 3600) return `${Math.floor(s / 60)}:${two(s % 60)}`;
    if (s < 86400) return `${Math.floor(s / 3600)}:${two(Math.floor(s / 60) % 60)}:${two(s % 60)}`;
    return `${Math.floor(s / 86400)}d ${two(Math.floor(s / 3600) % 24)}h`;
  }

  function level(ms) {
    if (ms > ALERT_MS) return "alert";
    if (ms > WARN_MS) return "warn";
    return "";
  }

  const number = new Intl.NumberFormat();
  const clockFormat = new Intl.DateTimeFormat(undefined, {
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });

  function queueLabel(queue) {
    return queue === NO_QUEUE ? "No queue" : queue;
  }

  function errorText(body, fallback) {
    if (body && typeof body.error === "string" && body.error) return body.error;
    if (body && typeof body.message === "string" && body.message) return body.message;
    return fallback;
  }

  async function readJson(response) {
    try {
      return await response.json();
    } catch {
      return null;
    }
  }

  // --- the page ---------------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);
  const view = {
    signin: $("signin"),
    signinForm: $("signin-form"),
    signinError: $("signin-error"),
    userId: $("user-id"),
    token: $("auth-token"),
    board: $("board"),
    tools: $("tools"),
    filter: $("queue-filter"),
    signOut: $("sign-out"),
    status: $("status"),
    statusText: $("status-text"),
    clock: $("clock"),
    totalWrap: $("total-wrap"),
    total: $("total"),
    totalLabel: $("total-label"),
    notice: $("notice"),
    tiles: $("tiles"),
    empty: $("empty"),
    calls: $("calls"),
    rows: $("call-rows"),
    tileTemplate: $("tile-template"),
  };

  const state = {
    login: null, // {userId, token}
    queue: "", // the queue filter ("" = all)
    generation: 0, // bumped by every (re)start: older loops stop
    controller: null, // aborts the current request
    lastEventId: "", // the ETag of the answer on screen, for a resume
    retryMs: null, // the server's retry: hint
    failures: 0, // consecutive failed connections (the backoff's exponent)
    reconnectAt: 0,
    reason: "", // why the last stream ended, shown while reconnecting
    skewMs: 0, // server clock minus this clock, from the Date header
    rooms: [],
    total: 0,
    count: 0,
    shown: false, // a first answer of the current query is on screen
    seenQueues: new Set(),
    rowsById: new Map(), // _id -> {tr, wait, queue, agent, direction, ts}
    tilesByQueue: new Map(), // queue -> {el, count, wait, unanswered, oldest}
  };

  function setStatus(kind, text) {
    view.status.dataset.state = kind;
    view.statusText.textContent = text;
    view.board.classList.toggle("stale", kind === "reconnecting" || kind === "error");
  }

  function readLogin() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(LOGIN_KEY) || "null");
      if (saved && typeof saved.userId === "string" && typeof saved.token === "string") {
        return saved;
      }
    } catch {
      // an unreadable entry is no login
    }
    return null;
  }

  function queueFromHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    return params.get("queue") || "";
  }

  function showSignIn(message) {
    stop();
    state.login = null;
    clearCalls(); // nothing of the calls stays in the page once signed out
    view.board.hidden = true;
    view.tools.hidden = true;
    view.totalWrap.hidden = true;
    view.signin.hidden = false;
    view.signinError.hidden = !message;
    view.signinError.textContent = message || "";
    setStatus(message ? "error" : "idle", message || "Signed out");
    (view.userId.value ? view.token : view.userId).focus();
  }

  function signOut(message) {
    const previous = readLogin();
    sessionStorage.removeItem(LOGIN_KEY);
    view.token.value = "";
    if (previous) view.userId.value = previous.userId;
    showSignIn(message);
  }

  function showBoard(login) {
    state.login = login;
    view.signin.hidden = true;
    view.signinError.hidden = true;
    view.board.hidden = false;
    view.tools.hidden = false;
    restart();
  }

  // --- the stream ---------------------------------------------------------------------------

  function streamUrl() {
    const params = new URLSearchParams({
      open: "true",
      count: String(COUNT),
      sort: JSON.stringify({ ts: 1 }),
      fields: JSON.stringify(FIELDS),
    });
    if (state.queue) params.set("queue", state.queue);
    return `${API}?${params}`;
  }

  function stop() {
    state.generation += 1;
    if (state.controller) state.controller.abort();
    state.controller = null;
  }

  function restart() {
    stop();
    state.lastEventId = "";
    state.failures = 0;
    state.shown = false;
    clearCalls();
    setStatus("connecting", "Connecting…");
    run(state.generation);
  }

  function sleep(ms, generation) {
    return new Promise((resolve) => {
      const started = Date.now();
      const check = () => {
        if (generation !== state.generation || Date.now() - started >= ms) resolve();
        else setTimeout(check, Math.min(250, ms));
      };
      setTimeout(check, Math.min(250, ms));
    });
  }

  async function run(generation) {
    while (generation === state.generation) {
      const outcome = await connect(generation);
      if (generation !== state.generation || outcome.final) return;
      // The server's retry: hint is the reconnection time; repeated failures back off from it,
      // with jitter so that many screens do not come back at the same instant.
      const base = state.retryMs ?? FIRST_DELAY_MS;
      const backoff = Math.min(MAX_DELAY_MS, base * 2 ** Math.min(state.failures, 10));
      let delay = Math.max(backoff, base) * (1 + Math.random() * 0.3);
      if (outcome.waitMs) delay = Math.max(delay, outcome.waitMs);
      state.failures += 1;
      state.reconnectAt = Date.now() + delay;
      reconnectStatus(outcome.reason);
      await sleep(delay, generation);
      if (generation === state.generation) setStatus("reconnecting", "Reconnecting…");
    }
  }

  function reconnectStatus(reason) {
    const seconds = Math.max(0, Math.ceil((state.reconnectAt - Date.now()) / 1000));
    state.reason = reason;
    setStatus("reconnecting", `${reason} · reconnecting in ${seconds} s`);
  }

  // One request: resolves with {final: true} when the board must stop (login refused), else
  // with why it ended and how long the server asked to wait.
  async function connect(generation) {
    const controller = new AbortController();
    state.controller = controller;
    const headers = {
      Accept: "text/event-stream",
      "X-User-Id": state.login.userId,
      "X-Auth-Token": state.login.token,
    };
    if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
    let response;
    try {
      response = await fetch(streamUrl(), {
        headers,
        signal: controller.signal,
        cache: "no-store",
        credentials: "omit",
        redirect: "error",
      });
    } catch {
      return { reason: "Server unreachable" };
    }
    if (generation !== state.generation) return { final: true };
    if (response.status === 401 || response.status === 403) {
      const body = await readJson(response);
      refused(response.status, body);
      return { final: true };
    }
    if (!response.ok) {
      const body = await readJson(response);
      const after = Number(response.headers.get("Retry-After"));
      const message = errorText(body, `HTTP ${response.status}`);
      if (response.status === 400) {
        setStatus("error", message); // a query the server refuses stays refused
        return { final: true };
      }
      return {
        reason: `${response.status}: ${message}`,
        waitMs: Number.isFinite(after) ? after * 1000 : 0,
      };
    }
    const type = response.headers.get("Content-Type") || "";
    if (!type.startsWith("text/event-stream") || !response.body) {
      controller.abort();
      setStatus("error", "This server does not stream live answers");
      return { final: true };
    }
    const served = Date.parse(response.headers.get("Date") || "");
    // A wall screen's clock may be off: waiting times are counted on the server's clock.
    if (Number.isFinite(served)) {
      const skew = served - Date.now();
      state.skewMs = Math.abs(skew) > 2000 ? skew : 0;
    }
    state.failures = 0;
    const stale = response.headers.get("X-Replica-Stale");
    setStatus("live", stale ? `Live · replica behind (${stale})` : "Live");
    return read(response.body, controller, generation);
  }

  async function read(body, controller, generation) {
    let lastData = Date.now();
    let ending = null; // set by an error event: the stream is over
    const parser = new SseParser({
      onEvent(event) {
        if (generation !== state.generation || ending) return;
        if (event.type === "rooms") {
          let answer;
          try {
            answer = JSON.parse(event.data);
          } catch {
            return; // not an answer: the next one replaces it anyway
          }
          state.lastEventId = event.id;
          show(answer);
        } else if (event.type === "error") {
          let answer = null;
          try {
            answer = JSON.parse(event.data);
          } catch {
            // the message below still says what happened
          }
          ending = answer || { error: "the server ended the stream" };
          controller.abort();
        }
      },
      onRetry(ms) {
        state.retryMs = ms;
      },
    });
    const watchdog = setInterval(() => {
      if (Date.now() - lastData > SILENCE_MS) controller.abort();
    }, 5000);
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let reason = "Stream ended";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        lastData = Date.now();
        parser.push(value);
      }
      parser.end();
    } catch {
      reason = Date.now() - lastData > SILENCE_MS ? "No data" : "Connection lost";
    } finally {
      clearInterval(watchdog);
      reader.cancel().catch(() => {});
    }
    if (ending) {
      // The login ended or lost its permission: the body of the 401 or 403 a GET now gets.
      refused(ending.error === "unauthorized" ? 403 : 401, ending);
      return { final: true };
    }
    if (generation !== state.generation) return { final: true };
    return { reason };
  }

  // The login was refused (at connection) or ended (an error event): back to the sign-in.
  function refused(status, body) {
    const reason = errorText(body, status === 403 ? "unauthorized" : "not logged in");
    const message =
      status === 403
        ? `This login may not view the call list (${reason}).`
        : `Sign-in needed: ${reason}`;
    signOut(message);
  }

  // --- rendering ----------------------------------------------------------------------------

  function clearCalls() {
    state.rooms = [];
    state.total = 0;
    state.count = 0;
    state.rowsById.clear();
    state.tilesByQueue.clear();
    view.rows.replaceChildren();
    view.tiles.replaceChildren();
    view.notice.hidden = true;
    view.empty.hidden = true;
    view.totalWrap.hidden = true;
  }

  function roomTs(room) {
    return typeof room.ts === "string" ? Date.parse(room.ts) : NaN;
  }

  function roomQueue(room) {
    return typeof room.queue === "string" && room.queue ? room.queue : NO_QUEUE;
  }

  function show(answer) {
    if (!answer || !Array.isArray(answer.rooms)) return;
    state.rooms = answer.rooms.filter((room) => room && typeof room._id === "string");
    state.total = Number(answer.total) || 0;
    state.count = state.rooms.length;
    for (const room of state.rooms) {
      if (typeof room.queue === "string" && room.queue) state.seenQueues.add(room.queue);
    }
    renderFilter();
    renderTiles();
    renderRows();
    renderTotals();
    state.shown = true;
    tick();
  }

  function renderFilter() {
    const wanted = [...state.seenQueues];
    if (state.queue && !state.seenQueues.has(state.queue)) wanted.push(state.queue);
    wanted.sort();
    const have = [...view.filter.options].slice(1).map((o) => o.value);
    if (have.join("\u0000") !== wanted.join("\u0000")) {
      const options = wanted.map((queue) => {
        const option = document.createElement("option");
        option.value = queue;
        option.textContent = queue;
        return option;
      });
      view.filter.replaceChildren(view.filter.options[0], ...options);
    }
    view.filter.value = state.queue;
  }

  function renderTotals() {
    view.totalWrap.hidden = false;
    view.total.textContent = number.format(state.total);
    view.totalLabel.textContent = state.queue ? `open in ${state.queue}` : "open";
    const truncated = state.count < state.total;
    view.notice.hidden = !truncated;
    if (truncated) {
      view.notice.textContent =
        `Showing the ${number.format(state.count)} longest-waiting of ` +
        `${number.format(state.total)} open calls; the queue counts cover those shown.`;
    }
    view.empty.hidden = state.total > 0;
    view.calls.hidden = state.count === 0;
  }

  function renderTiles() {
    const groups = new Map();
    if (!state.queue && state.count === state.total) {
      // every open call is here: the queues seen before, now empty, show as 0
      for (const queue of state.seenQueues) groups.set(queue, { count: 0, oldest: NaN, idle: 0 });
    }
    if (state.queue) groups.set(state.queue, { count: 0, oldest: NaN, idle: 0 });
    for (const room of state.rooms) {
      const queue = roomQueue(room);
      if (state.queue && queue !== state.queue) continue;
      let group = groups.get(queue);
      if (!group) groups.set(queue, (group = { count: 0, oldest: NaN, idle: 0 }));
      group.count += 1;
      const ts = roomTs(room);
      if (Number.isFinite(ts) && !(ts >= group.oldest)) group.oldest = ts;
      if (!room.servedBy || !room.servedBy.username) group.idle += 1;
    }
    const order = [...groups.keys()].sort((a, b) =>
      a === NO_QUEUE ? 1 : b === NO_QUEUE ? -1 : a < b ? -1 : a > b ? 1 : 0,
    );
    const next = new Map();
    const elements = [];
    for (const queue of order) {
      let tile = state.tilesByQueue.get(queue);
      if (!tile) {
        const el = view.tileTemplate.content.firstElementChild.cloneNode(true);
        tile = {
          el,
          count: el.querySelector(".tile-count"),
          wait: el.querySelector(".tile-wait"),
          unanswered: el.querySelector(".tile-unanswered"),
          oldest: NaN,
        };
        el.querySelector(".tile-queue").textContent = queueLabel(queue);
        el.dataset.queue = queue === NO_QUEUE ? "" : queue;
      }
      const group = groups.get(queue);
      tile.oldest = group.oldest;
      tile.count.textContent = number.format(group.count);
      tile.unanswered.textContent = group.idle ? `${number.format(group.idle)} unanswered` : "";
      next.set(queue, tile);
      elements.push(tile.el);
    }
    state.tilesByQueue = next;
    view.tiles.replaceChildren(...elements);
  }

  function renderRows() {
    const next = new Map();
    const rows = [];
    for (const room of state.rooms) {
      let row = state.rowsById.get(room._id);
      if (!row) {
        const tr = document.createElement("tr");
        tr.dataset.id = room._id;
        const cell = (name) => {
          const td = document.createElement("td");
          td.className = name;
          tr.append(td);
          return td;
        };
        row = {
          tr,
          wait: cell("wait"),
          queue: cell("queue"),
          agent: cell("agent"),
          direction: cell("direction"),
          ts: NaN,
        };
        if (state.shown) tr.classList.add("arrived"); // a call that came in while watching
      }
      row.ts = roomTs(room);
      const queue = roomQueue(room);
      row.queue.textContent = queueLabel(queue);
      row.queue.classList.toggle("muted", queue === NO_QUEUE);
      const agent = room.servedBy && room.servedBy.username;
      row.agent.textContent = typeof agent === "string" && agent ? agent : "unanswered";
      row.agent.classList.toggle("unanswered", !agent);
      row.direction.textContent = DIRECTIONS.get(room.direction) || "—";
      next.set(room._id, row);
      rows.push(row.tr);
    }
    state.rowsById = next;
    view.rows.replaceChildren(...rows);
  }

  // Every second: the clock, each call's waiting time and each queue's longest wait.
  function tick() {
    const now = Date.now() + state.skewMs;
    view.clock.textContent = clockFormat.format(now);
    view.clock.dateTime = new Date(now).toISOString();
    for (const row of state.rowsById.values()) {
      const waited = now - row.ts;
      row.wait.textContent = formatWait(waited);
      const rank = level(waited);
      row.tr.classList.toggle("warn", rank === "warn");
      row.tr.classList.toggle("alert", rank === "alert");
    }
    for (const tile of state.tilesByQueue.values()) {
      const waited = now - tile.oldest;
      tile.wait.textContent = formatWait(waited);
      const rank = Number.isFinite(waited) ? level(waited) : "";
      tile.el.classList.toggle("warn", rank === "warn");
      tile.el.classList.toggle("alert", rank === "alert");
    }
    if (view.status.dataset.state === "reconnecting" && state.reconnectAt > Date.now()) {
      reconnectStatus(state.reason);
    }
  }

  function everySecond() {
    tick();
    setTimeout(everySecond, 1000 - (Date.now() % 1000) + 5);
  }

  // --- wiring -------------------------------------------------------------------------------

  view.signinForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const login = { userId: view.userId.value.trim(), token: view.token.value.trim() };
    if (!login.userId || !login.token) return;
    sessionStorage.setItem(LOGIN_KEY, JSON.stringify(login));
    view.token.value = "";
    showBoard(login);
  });

  view.signOut.addEventListener("click", () => signOut(""));

  view.filter.addEventListener("change", () => {
    const queue = view.filter.value;
    history.replaceState(null, "", queue ? `#queue=${encodeURIComponent(queue)}` : "#");
    if (queue !== state.queue) {
      state.queue = queue;
      if (state.login) restart();
    }
  });

  window.addEventListener("hashchange", () => {
    const queue = queueFromHash();
    if (queue !== state.queue) {
      state.queue = queue;
      if (state.login) restart();
    }
  });

  // For the page's own tests in a real browser.
  window.voipBoard = Object.freeze({ SseParser, formatWait });

  state.queue = queueFromHash();
  everySecond();
  const saved = readLogin();
  if (saved) showBoard(saved);
  else showSignIn("");
})();
