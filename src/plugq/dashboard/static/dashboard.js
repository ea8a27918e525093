// plugq dashboard: live updates by polling the JSON API. Everything the
// server sends is put into the page with textContent, never as HTML.
(function () {
  "use strict";
  var body = document.body;
  var base = body.getAttribute("data-base") || "";
  var page = body.getAttribute("data-page");
  var POLL_MS = 2000;

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) { for (var k in attrs) { if (Object.prototype.hasOwnProperty.call(attrs, k)) { e.setAttribute(k, attrs[k]); } } }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function fmtTime(ts) {
    if (ts === null || ts === undefined) { return "\u2013"; }
    return new Date(ts * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }
  function getJSON(path, done) {
    var xhr = new XMLHttpRequest();
    xhr.open("GET", base + path);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.onload = function () {
      var live = document.getElementById("live");
      if (xhr.status === 200) {
        if (live) { live.className = "live"; live.textContent = "live"; }
        var upd = document.getElementById("updated");
        if (upd) { upd.textContent = fmtTime(Date.now() / 1000); }
        done(JSON.parse(xhr.responseText));
      } else if (live) { live.className = "live off"; live.textContent = "HTTP " + xhr.status; }
    };
    xhr.onerror = function () {
      var live = document.getElementById("live");
      if (live) { live.className = "live off"; live.textContent = "offline"; }
    };
    xhr.send();
  }
  function poll(path, done) {
    var run = function () { getJSON(path, done); };
    run();
    setInterval(run, POLL_MS);
  }

  // -- overview: counts, workers, chart ------------------------------------
  function renderCounts(snap) {
    var table = document.getElementById("counts");
    if (!table) { return; }
    var tbody = table.tBodies[0];
    var rows = [];
    snap.queues.forEach(function (q) {
      var tr = el("tr", { "data-queue": q.name });
      var td = el("td");
      td.appendChild(el("a", { href: base + "/queues/" + encodeURIComponent(q.name) }, q.name));
      tr.appendChild(td);
      snap.statuses.forEach(function (s) {
        var c = el("td", { "class": "num" });
        c.appendChild(el("a", { "data-count": s, href: base + "/queues/" + encodeURIComponent(q.name) + "?status=" + s }, q.counts[s]));
        tr.appendChild(c);
      });
      rows.push(tr);
    });
    if (!rows.length) {
      var tr = el("tr", { "class": "empty" });
      tr.appendChild(el("td", { colspan: String(snap.statuses.length + 1) }, "no queues yet"));
      rows.push(tr);
    }
    tbody.replaceChildren.apply(tbody, rows);
    snap.statuses.forEach(function (s) {
      var t = table.querySelector('[data-total="' + s + '"]');
      if (t) { t.textContent = String(snap.totals[s]); }
    });
  }
  function ago(s) {
    if (s === null || s === undefined) { return "\u2013"; }
    s = Math.floor(s);
    if (s < 60) { return s + "s ago"; }
    if (s < 3600) { return Math.floor(s / 60) + "m " + (s % 60) + "s ago"; }
    return Math.floor(s / 3600) + "h " + Math.floor(s % 3600 / 60) + "m ago";
  }
  function renderWorkers(workers) {
    var table = document.getElementById("workers");
    if (!table) { return; }
    var rows = workers.map(function (w) {
      var tr = el("tr");
      tr.appendChild(el("td", null, w.name));
      var st = el("td");
      st.appendChild(el("span", { "class": "state " + w.state }, w.state));
      tr.appendChild(st);
      tr.appendChild(el("td", null, (w.queues || []).join(", ")));
      var cur = el("td");
      if (w.current_job_id) {
        cur.appendChild(el("a", { href: base + "/jobs/" + encodeURIComponent(w.current_job_id) }, w.current_job_id));
      } else { cur.textContent = "\u2013"; }
      tr.appendChild(cur);
      tr.appendChild(el("td", { "class": "num" }, w.successful_jobs));
      tr.appendChild(el("td", { "class": "num" }, w.failed_jobs));
      tr.appendChild(el("td", null, w.pid + "@" + w.hostname));
      tr.appendChild(el("td", null, ago(w.heartbeat_age)));
      return tr;
    });
    if (!rows.length) {
      var tr = el("tr", { "class": "empty" });
      tr.appendChild(el("td", { colspan: "8" }, "no workers"));
      rows.push(tr);
    }
    var tbody = table.tBodies[0];
    tbody.replaceChildren.apply(tbody, rows);
    var n = document.getElementById("worker-count");
    if (n) { n.textContent = String(workers.length); }
  }

  var SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs) { if (Object.prototype.hasOwnProperty.call(attrs, k)) { e.setAttribute(k, attrs[k]); } }
    return e;
  }
  function renderChart(data) {
    var box = document.getElementById("chart");
    if (!box) { return; }
    var W = Math.max(360, box.clientWidth - 16), H = 160, padL = 34, padB = 18, n = data.minutes;
    var max = 1;
    for (var i = 0; i < n; i++) { max = Math.max(max, data.finished[i] + data.failed[i]); }
    var root = svg("svg", { viewBox: "0 0 " + W + " " + H, width: String(W), height: String(H), "class": "chart-svg" });
    var bw = (W - padL) / n, plotH = H - padB - 6;
    root.appendChild(svg("line", { x1: padL, y1: H - padB, x2: W, y2: H - padB, "class": "axis" }));
    var top = svg("text", { x: padL - 4, y: 12, "text-anchor": "end", "class": "tick" });
    top.textContent = String(max);
    root.appendChild(top);
    var zero = svg("text", { x: padL - 4, y: H - padB, "text-anchor": "end", "class": "tick" });
    zero.textContent = "0";
    root.appendChild(zero);
    for (i = 0; i < n; i++) {
      var x = padL + i * bw, fin = data.finished[i], fail = data.failed[i];
      var hf = fin / max * plotH, hx = fail / max * plotH;
      var t = new Date((data.start + i * 60) * 1000).toISOString().slice(11, 16);
      if (fin) {
        var r1 = svg("rect", { x: x + 1, y: H - padB - hf, width: Math.max(1, bw - 2), height: hf, "class": "bar finished" });
        var t1 = svg("title", {}); t1.textContent = t + " UTC: " + fin + " finished"; r1.appendChild(t1);
        root.appendChild(r1);
      }
      if (fail) {
        var r2 = svg("rect", { x: x + 1, y: H - padB - hf - hx, width: Math.max(1, bw - 2), height: hx, "class": "bar failed" });
        var t2 = svg("title", {}); t2.textContent = t + " UTC: " + fail + " failed"; r2.appendChild(t2);
        root.appendChild(r2);
      }
      if (i % 10 === 0) {
        var lab = svg("text", { x: x, y: H - 4, "class": "tick" });
        lab.textContent = t;
        root.appendChild(lab);
      }
    }
    box.replaceChildren(root);
    var note = document.getElementById("chart-note");
    var sum = function (a) { return a.reduce(function (p, c) { return p + c; }, 0); };
    if (note) {
      note.textContent = "\u00b7 " + sum(data.finished) + " finished, " + sum(data.failed) + " failed in the hour" +
        (data.truncated ? " (read from the newest jobs only: older minutes may be short)" : "");
    }
  }

  // -- one job ----------------------------------------------------------------
  function renderJob(job) {
    var set = function (id, text) { var e = document.getElementById(id); if (e) { e.textContent = text; } };
    var st = document.getElementById("job-status");
    if (st) { st.textContent = job.status; st.className = "status st-" + job.status; }
    set("job-enqueued", fmtTime(job.enqueued_at));
    set("job-started", fmtTime(job.started_at));
    set("job-ended", fmtTime(job.ended_at));
    set("job-worker", job.worker_name || "\u2013");
    set("job-attempts", String(job.attempts));
    set("job-result", job.result === null ? "\u2013" : job.result);
    set("exc-info", job.exc_info || "\u2013");
    var forms = document.querySelectorAll("#job-actions form[data-action]");
    Array.prototype.forEach.call(forms, function (f) {
      f.hidden = job.actions.indexOf(f.getAttribute("data-action")) < 0;
    });
  }

  document.addEventListener("submit", function (ev) {
    var f = ev.target;
    if (f.classList && f.classList.contains("confirm") && !window.confirm("Really? This cannot be undone.")) {
      ev.preventDefault();
    }
  });

  if (page === "overview") {
    poll("/api/overview", function (snap) { renderCounts(snap); renderWorkers(snap.workers); });
    poll("/api/chart", renderChart);
  } else if (page === "workers") {
    poll("/api/workers", function (d) { renderWorkers(d.workers); });
  } else if (page === "job") {
    var id = body.getAttribute("data-job");
    poll("/api/jobs/" + encodeURIComponent(id), renderJob);
  }
}());
