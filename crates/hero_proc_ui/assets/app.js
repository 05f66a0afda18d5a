// hero_proc admin UI: plain JavaScript, no build step. Every number on the page comes
// from the daemon's public RPC through /api/<method>; nothing is computed here.
"use strict";

const view = document.getElementById("view");
const live = document.getElementById("live");
let selectedJob = null;

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function short(rev) { return rev ? esc(rev.slice(0, 12)) : "–"; }
function when(ms) { return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) + "Z" : "–"; }

// Over TCP the login URL set an HttpOnly cookie: same-origin fetches carry it, and the
// browser adds the Origin header the UI checks on writes. Nothing here sees the token.
async function api(method, params) {
  const q = params ? "?" + new URLSearchParams(params) : "";
  const r = await fetch("/api/" + method + q, { credentials: "same-origin" });
  const v = await r.json();
  if (v && v.error) throw Object.assign(new Error(v.error), { status: r.status });
  return v;
}
async function post(method) {
  const r = await fetch("/api/" + method, { method: "POST", credentials: "same-origin" });
  const v = await r.json();
  if (v && v.error) alert(v.error);
  refresh();
}

function table(headers, rows) {
  return "<table><tr>" + headers.map((h) => `<th>${esc(h)}</th>`).join("") + "</tr>" + rows.join("") + "</table>";
}

function diffHtml(text) {
  return '<pre class="diff">' + text.split("\n").map((l) => {
    const cls = l.startsWith("+++") || l.startsWith("---") ? "head" : l.startsWith("+") ? "add" : l.startsWith("-") ? "del" : l.startsWith("@@") ? "hunk" : "";
    return `<span class="${cls}">${esc(l)}</span>`;
  }).join("\n") + "</pre>";
}

function planHtml(p) {
  const s = p.summary;
  let h = `<p><b>${short(p.target.id)}</b> ${esc(p.target.summary)} <span class="muted">by ${esc(p.target.author)}</span><br>
    +${s.create} ~${s.update} -${s.delete} · ${s.restart} restarts · ${s.start} starts · ${s.stop} stops · ${s.migrations} migrations</p>`;
  if (p.refusals.length) h += `<h2 class="bad">Refused: nothing will be applied</h2><pre class="error">${esc(p.refusals.join("\n"))}</pre>`;
  for (const c of p.changes) {
    const sign = { create: "+", update: "~", delete: "-" }[c.op];
    const notes = [c.drift ? "drift" : "", c.adopt ? "adopt" : ""].filter(Boolean).join(", ");
    h += `<div class="change ${c.op}">${sign} ${esc(c.kind)} ${esc(c.context)}/${esc(c.name)} ${notes ? `<span class="muted">(${notes})</span>` : ""}</div>`;
    if (c.diff) h += diffHtml(c.diff);
  }
  const list = (title, items) => items.length ? `<h2>${title}</h2><ul>${items.map((i) => `<li>${i}</li>`).join("")}</ul>` : "";
  const artifact = (a) => `${esc(a.action)}: ${esc(a.name)} ${a.from ? `${esc(a.from)} → ` : ""}${esc(a.to)}${a.from ? "" : " (new)"} <span class="muted">(${a.cached === true ? "cached" : a.cached === false ? (a.size != null ? `${(a.size / 1048576).toFixed(1)} MB to download` : "to download") : "downloaded if not cached"})</span>`;
  h += list("Artifacts (installed before anything is applied)", (p.artifacts || []).map(artifact));
  h += list("Restarts", p.restarts.map((r) => `${esc(r.service)} <span class="muted">(${esc(r.because)})</span>`));
  h += list("Starts", p.starts.map((r) => `${esc(r.service)} <span class="muted">(${esc(r.because)})</span>`));
  h += list("Stops", p.stops.map((r) => `${esc(r.service)} <span class="muted">(${esc(r.because)})</span>`));
  h += list("Migrations to run", (p.migration_preview && p.migration_preview.length ? p.migration_preview : p.migrations.map((n) => ({ name: n, effects: [] })))
    .map((m) => `${esc(m.name)}${m.effects.length ? "<pre>" + esc(m.effects.join("\n")) + "</pre>" : ""}${m.error ? `<pre class="error">${esc(m.error)}</pre>` : ""}`));
  h += list("Drift", p.drift.map((d) => `${esc(d.object)}: ${esc(d.what)}`));
  h += list("Held out of sync (drift left alone until released or changed in git)", (p.held || []).map(esc));
  h += list("Released (git changed these held objects)", (p.released || []).map(esc));
  h += list("Unmanaged (left alone)", p.unmanaged.map(esc));
  if (!p.changes.length && !p.restarts.length && !p.starts.length && !p.stops.length && !p.migrations.length) h += `<p class="ok">No changes: the live state matches the revision.</p>`;
  return h;
}

function servicesTable(list) {
  return table(["service", "want", "state", "pid", "restarts", "health", "reason"], list.map((s) => {
    const sick = (s.health || []).some((c) => !c.healthy);
    const cls = s.state === "running" && !sick ? "ok" : ["failed", "backoff"].includes(s.state) || sick ? "bad" : "muted";
    // The title says when it was probed, and the last error of a check that recovered.
    const title = (c) => [c.detail, c.probed_ms ? `probed ${when(c.probed_ms)}` : "", c.healthy && c.last_error ? `last error ${when(c.last_error_ms)}: ${c.last_error}` : ""].filter(Boolean).join("; ");
    const health = (s.health || []).map((c) => `<span class="check ${c.healthy ? "ok" : "bad"}" title="${esc(title(c))}">${c.healthy ? "✓" : "✗"} ${esc(c.check)}</span>`).join("");
    return `<tr><td>${esc(s.context)}/${esc(s.name)}${s.managed ? "" : ' <span class="muted">(by hand)</span>'}</td><td>${esc(s.status)}</td>
      <td class="${cls}">${esc(s.state)}${s.crash_loop ? " (crash loop)" : ""}</td><td>${s.pid ?? "–"}</td><td>${s.restarts}</td><td>${health}</td><td>${esc(s.reason)}</td></tr>`;
  }));
}

function secretsTable(list) {
  return table(["context", "name", "source", "fingerprint", "managed", "updated"], list.map((s) =>
    `<tr><td>${esc(s.context)}</td><td>${esc(s.name)}</td><td>${esc(s.source)}</td><td class="mono">${esc(s.fingerprint)}</td><td>${s.managed ? "git" : "by hand"}</td><td>${when(s.updated_at_ms)}</td></tr>`));
}

// The overview's plan is fetched when the page opens and again only when the applied or
// head revision or the drift changes (a plan fetches the repository).
let overviewPlan = null;
let overviewKey = null;

const pages = {
  async overview() {
    const [s, services, secrets] = await Promise.all([api("reconcile.status"), api("service.list"), api("secret.list")]);
    const key = [s.applied_revision, s.head_revision, s.pinned_revision, s.drift.length, s.last_error].join("|");
    if (overviewPlan === null || key !== overviewKey) {
      overviewKey = key;
      overviewPlan = s.repo
        ? await api("reconcile.plan").then(planHtml).catch((e) => `<pre class="error">${esc(e.message)}</pre>`)
        : `<p class="muted">No repository: this daemon runs without --repo.</p>`;
    }
    let h = `<h2>Sync</h2><p>${s.repo ? `<span class="mono">${esc(s.repo)}</span> ${s.branch ? "(" + esc(s.branch) + ")" : ""} · ` : ""}
      applied <b class="mono">${short(s.applied_revision)}</b> · head <span class="mono">${short(s.head_revision)}</span>
      ${s.pinned_revision ? ` · <span class="warn">pinned ${short(s.pinned_revision)}</span>` : ""}
      ${s.suspended ? ' · <span class="warn">SUSPENDED</span>' : ""}
      · drift: ${s.drift.length ? `<span class="warn">${s.drift.length}</span>` : "none"}
      ${s.last_result ? " · last: " + esc(s.last_result) : ""}</p>`;
    if (s.last_error) h += `<pre class="error">${esc(s.last_error)}</pre>`;
    h += `<h2>Services</h2>` + servicesTable(services);
    h += `<h2>Pending plan <button onclick="overviewPlan = null; refresh()">Preview again</button></h2>` + overviewPlan;
    h += `<h2>Secrets</h2><p class="muted">Names only; values never leave the daemon.</p>` + secretsTable(secrets);
    return h;
  },
  async sync() {
    const [s, history] = await Promise.all([api("reconcile.status"), api("reconcile.history", { limit: 20 })]);
    let h = `<h2>Sync</h2><div class="kv">
      <div>repository</div><div class="mono">${esc(s.repo ?? "none (no --repo)")} ${s.branch ? "(" + esc(s.branch) + ")" : ""}</div>
      <div>host</div><div>${esc(s.host)}</div>
      <div>applied</div><div class="mono">${short(s.applied_revision)} <span class="muted">${when(s.applied_at_ms)}</span></div>
      <div>head</div><div class="mono">${short(s.head_revision)}</div>
      <div>pinned</div><div class="mono">${s.pinned_revision ? `<span class="warn">${short(s.pinned_revision)}</span> (held until resume)` : "–"}</div>
      <div>automatic sync</div><div>${s.suspended ? '<span class="warn">SUSPENDED</span>' : "on"}</div>
      <div>last result</div><div>${esc(s.last_result ?? "–")} ${s.last_duration_ms != null ? `<span class="muted">${s.last_duration_ms} ms</span>` : ""}</div>
      <div>self-heal</div><div>${s.self_heal === false ? "off (drift reported only)" : "on"}</div>
    </div>`;
    h += `<p><button onclick="post('reconcile.apply')">Sync now</button>` +
      (s.suspended || s.pinned_revision ? `<button onclick="post('reconcile.resume')">Resume</button>` : `<button onclick="post('reconcile.suspend')">Suspend</button>`) + `</p>`;
    if (s.last_error) h += `<h2 class="bad">Last error (${s.consecutive_failures} in a row)</h2><pre class="error">${esc(s.last_error)}</pre>`;
    h += `<h2>Drift</h2>` + (s.drift.length ? table(["object", "what"], s.drift.map((d) => `<tr><td>${esc(d.object)}</td><td class="warn">${esc(d.what)}</td></tr>`)) : `<p class="ok">none</p>`);
    h += `<h2>History</h2>` + table(["time", "commit", "result", "author", "summary"], history.map((e) => {
      const r = e.record, sm = r.summary || {};
      const cls = r.result === "applied" || r.result === "noop" ? "ok" : "bad";
      return `<tr><td>${when(r.applied_at_ms)}</td><td class="mono">${short(r.revision)}</td><td class="${cls}">${esc(r.result)}</td><td>${esc((r.author || "").split(" <")[0])}</td>
        <td>+${sm.create ?? 0} ~${sm.update ?? 0} -${sm.delete ?? 0} ${esc(sm.commit)} ${r.error ? `<div class="error">${esc(r.error.split("\n")[0])}</div>` : ""}</td></tr>`;
    }));
    return h;
  },
  async plan() {
    try {
      return `<h2>Plan <button onclick="refresh(true)">Preview again</button></h2>` + planHtml(await api("reconcile.plan"));
    } catch (e) {
      return `<h2>Plan</h2><pre class="error">${esc(e.message)}</pre>`;
    }
  },
  async services() {
    return `<h2>Services</h2>` + servicesTable(await api("service.list"));
  },
  async jobs() {
    const [runs, jobs] = await Promise.all([api("run.list", { limit: 10 }), api("job.list", { limit: 50 })]);
    let h = `<h2>Jobs</h2>` + table(["id", "action", "service", "phase", "exit", "started"], jobs.map((j) =>
      `<tr class="clickable" onclick="showLogs(${j.id})"><td>${j.id}</td><td>${esc(j.action)}</td><td>${esc(j.service)}</td>
       <td class="${j.phase === "failed" ? "bad" : j.phase === "succeeded" || j.phase === "running" ? "ok" : "muted"}">${esc(j.phase)}</td>
       <td>${j.exit_code ?? (j.signal ? "sig " + j.signal : "–")}</td><td>${when(j.started_at_ms)}</td></tr>`));
    if (selectedJob != null) {
      try {
        const logs = await api("job.logs", { id: selectedJob, tail: 200 });
        h += `<h2>Output of job ${selectedJob}</h2><pre>${esc(logs.lines.join("\n"))}</pre>`;
      } catch (e) { h += `<pre class="error">${esc(e.message)}</pre>`; }
    }
    h += `<h2>Runs</h2>` + table(["id", "label", "phase", "jobs", "created"], runs.map((r) =>
      `<tr><td>${r.id}</td><td>${esc(r.label)}</td><td>${esc(r.phase)}</td><td>${r.jobs.length}</td><td>${when(r.created_at_ms)}</td></tr>`));
    return h;
  },
  async secrets() {
    return `<h2>Secrets</h2><p class="muted">Names and where they come from; values never leave the daemon.</p>` +
      secretsTable(await api("secret.list"));
  },
  async system() {
    const [info, comp, mig] = await Promise.all([api("system.info"), api("system.compactor_status"), api("migrate.status").catch(() => null)]);
    const mb = (b) => (b / 1048576).toFixed(2) + " MB";
    let h = `<h2>System</h2><div class="kv">
      <div>version</div><div>${esc(info.version)} (pid ${info.pid})</div>
      <div>root</div><div class="mono">${esc(info.root)}</div>
      <div>database</div><div>${mb(info.db_size_bytes)}, ${info.db_free_pages} free pages</div>
      <div>log store</div><div>${mb(info.log_bytes)}</div>
      <div>services</div><div>${info.services_running} running of ${info.services}; ${info.jobs_running} jobs running</div></div>`;
    h += `<h2>Compactor</h2><pre>${esc(JSON.stringify(comp, null, 2))}</pre>`;
    if (mig) h += `<h2>Migrations</h2>` + table(["migration", "state", "revision", "took"], mig.migrations.map((m) =>
      `<tr><td>${esc(m.name)}</td><td class="${m.state === "applied" ? "ok" : m.state === "pending" ? "muted" : "bad"}">${esc(m.state)}</td><td class="mono">${short(m.revision)}</td><td>${m.duration_ms ?? "–"} ms</td></tr>`));
    return h;
  },
};

function showLogs(id) { selectedJob = id; refresh(); }

function page() {
  const p = location.hash.slice(1);
  return pages[p] ? p : "overview";
}

let planShown = null;
async function refresh(force) {
  const p = page();
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.getAttribute("href") === "#" + p);
  // A plan fetches and previews: only on opening the page or on request, not every tick.
  if (p === "plan" && planShown === "plan" && !force) return;
  try {
    view.innerHTML = await pages[p]();
    planShown = p;
    live.classList.remove("stale");
    live.textContent = "live · " + new Date().toLocaleTimeString();
  } catch (e) {
    live.classList.add("stale");
    // 401: the UI restarted (new token) or the session ended: say how to log in again.
    live.textContent = (e.status === 401 ? "" : "daemon unreachable: ") + e.message;
  }
}

window.addEventListener("hashchange", () => { planShown = null; refresh(); });
refresh();
setInterval(refresh, 2000);
