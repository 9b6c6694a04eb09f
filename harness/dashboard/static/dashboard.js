// clevertap-harness dashboard: the live journal (server-sent events) and the controls.
// No framework, no build step: the server renders every row; this only inserts them.
"use strict";

const body = document.body;
const control = body.dataset.control || "/_harness";
const token = body.dataset.token || "";

function headers() {
  const h = { "Content-Type": "application/json" };
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

function say(text, bad) {
  const out = document.getElementById("control-status");
  if (!out) return;
  out.textContent = text;
  out.className = bad ? "error" : "ok";
}

async function call(method, path, payload) {
  const response = await fetch(control + path, {
    method,
    headers: headers(),
    body: payload === undefined ? undefined : JSON.stringify(payload),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(method + " " + path + ": " + response.status + " " + text);
  return text ? JSON.parse(text) : null;
}

function setUpControls() {
  const form = document.querySelector("[data-fault-form]");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const rule = { action: data.get("action") };
    if (rule.action === "status") rule.status = Number(data.get("status"));
    if (data.get("first")) rule.first = Number(data.get("first"));
    if (Number(data.get("delay"))) rule.delay = Number(data.get("delay"));
    if (data.get("endpoint")) rule.endpoints = [data.get("endpoint")];
    try {
      await call("PUT", "/faults", { rules: [rule] });
      // The server shows the rules as written (one spelling, FaultRule.describe): reload.
      window.location.reload();
    } catch (error) {
      say(String(error.message), true);
    }
  });
  document.getElementById("fault-clear").addEventListener("click", async () => {
    try {
      await call("DELETE", "/faults");
      window.location.reload();
    } catch (error) {
      say(String(error.message), true);
    }
  });
  document.querySelectorAll("[data-host]").forEach((row) => {
    const name = row.dataset.host;
    const path = "/hosts/" + encodeURIComponent(name);
    row.querySelector("[data-host-down]").addEventListener("click", async () => {
      const variant = row.querySelector("[data-host-variant]").value;
      try {
        await call("POST", path + "/down", { variant });
        window.location.reload();
      } catch (error) {
        say(String(error.message), true);
      }
    });
    row.querySelector("[data-host-up]").addEventListener("click", async () => {
      try {
        await call("POST", path + "/up", {});
        window.location.reload();
      } catch (error) {
        say(String(error.message), true);
      }
    });
  });
  document.getElementById("reset").addEventListener("click", async () => {
    if (!window.confirm("Forget every journal entry?")) return;
    try {
      await call("POST", "/reset");
      window.location.reload();
    } catch (error) {
      say(String(error.message), true);
    }
  });
}

let refreshing = false;
let again = false;

function refreshFaults() {
  // One request in flight at a time; a callback that arrives meanwhile asks for one more
  // after it, so the counters end up current without a request per callback.
  const now = document.getElementById("faults-now");
  if (!now) return;
  if (refreshing) {
    again = true;
    return;
  }
  refreshing = true;
  fetch("/fragment/faults", { headers: headers() })
    .then((response) => (response.ok ? response.text() : null))
    .then((html) => { if (html !== null) now.innerHTML = html; })
    .catch(() => {})
    .finally(() => {
      refreshing = false;
      if (again) {
        again = false;
        refreshFaults();
      }
    });
}

function refreshHosts() {
  // A host switched elsewhere (the control API, another tab): its state follows. The page's
  // own switches reload it (their buttons are wired on load).
  const now = document.getElementById("hosts-now");
  if (!now) return;
  fetch("/fragment/hosts", { headers: headers() })
    .then((response) => (response.ok ? response.text() : null))
    .then((html) => {
      if (html === null) return;
      const fresh = document.createElement("tbody");
      fresh.innerHTML = html;
      fresh.querySelectorAll("[data-host]").forEach((row) => {
        const old = document.getElementById(row.id);
        if (!old) return;
        old.querySelector(".host-state").replaceWith(row.querySelector(".host-state"));
        old.querySelector("[data-host-up]").disabled = row.querySelector("[data-host-up]").disabled;
      });
    })
    .catch(() => {});
}

function setUpLive() {
  const table = document.getElementById("journal");
  if (!table) return;
  const state = document.getElementById("live-state");
  if (table.dataset.live !== "yes") {
    state.textContent = "an older page: not live (Live shows new entries)";
    return;
  }
  const rows = document.getElementById("entries");
  const query = new URLSearchParams(table.dataset.query || "");
  query.set("since", table.dataset.since);
  // EventSource sends cookies (the /login token) and resumes with Last-Event-ID by itself.
  const source = new EventSource(control + "/events?" + query.toString());
  source.addEventListener("open", () => { state.textContent = "live"; });
  source.addEventListener("error", () => { state.textContent = "disconnected, retrying…"; });
  source.addEventListener("gap", () => window.location.reload());
  source.addEventListener("entry", (event) => {
    const item = JSON.parse(event.data);
    if (item.kind === "callback" || item.kind === "faults") refreshFaults();
    if (item.kind === "host") refreshHosts();
    if (document.getElementById("e" + item.seq)) return;
    const empty = document.getElementById("empty");
    if (empty) empty.remove();
    rows.insertAdjacentHTML("afterbegin", item.html);
    document.getElementById("newest").textContent = item.seq;
    // Keep the page bounded however long it stays open; older rows are a click away.
    while (rows.rows.length > 500) rows.deleteRow(-1);
  });
}

setUpControls();
setUpLive();
