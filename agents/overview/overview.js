// salesops overview: fetches the worker's /api JSON and draws tables and charts.
// Plain browser JavaScript, no build step. Text from the API is only ever set with
// textContent or attributes, never parsed as HTML. Money is shown from the API's exact
// decimal strings; sums are made in BigInt cents, so no cent is lost to floats.
"use strict";

(() => {
  const REFRESH_MS = 10000;
  const DAY_MS = 86400000;
  const MAX_ALERT_ROWS = 100;
  const COLORS = {
    value: "#2f6fb0",
    weighted: "#8fb8de",
    window: "#2e8b57",
    cohort: "#9fd3b3",
    median: "#c9822b",
    p90: "#e8c07d",
    up: "#2e8b57",
    down: "#c0392b",
    total: "#6c7a89",
    enps30: "#6a4c93",
    enps90: "#b8a2d6",
  };

  const state = {
    order: new Map(), // pipeline -> [open stages in configured order], from /api/funnel
    month: null, // the current month's label, from /api/movement
    charts: {},
    timer: null,
  };

  // ------------------------------------------------------------------ helpers

  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null) continue;
      if (k === "class") node.className = v;
      else if (k === "data") for (const [dk, dv] of Object.entries(v)) node.dataset[dk] = String(dv);
      else node.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === undefined || c === null) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  const td = (text, cls, props) => el("td", { class: cls, ...(props || {}) }, text);
  const num = (text, cls, props) => td(text, cls ? `num ${cls}` : "num", props);

  function setText(id, text) {
    $(id).textContent = text;
  }

  function group3(digits) {
    return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  // "1234567.80" -> "1,234,567.80" (the string as given: exact)
  function money(decimal) {
    if (decimal === null || decimal === undefined) return "-";
    const s = String(decimal);
    const neg = s.startsWith("-");
    const [whole, frac] = (neg ? s.slice(1) : s).split(".");
    return `${neg ? "-" : ""}${group3(whole)}${frac !== undefined ? "." + frac : ""}`;
  }

  // exact decimal string -> BigInt cents ("12.3" and "12.30" -> 1230n)
  function cents(decimal) {
    const s = String(decimal);
    const neg = s.startsWith("-");
    const [whole, frac = ""] = (neg ? s.slice(1) : s).split(".");
    const c = BigInt(whole || "0") * 100n + BigInt((frac + "00").slice(0, 2));
    return neg ? -c : c;
  }

  function centsText(c) {
    const neg = c < 0n;
    const a = neg ? -c : c;
    const frac = String(a % 100n).padStart(2, "0");
    return `${neg ? "-" : ""}${group3(String(a / 100n))}.${frac}`;
  }

  const float = (decimal) => Number(decimal); // for chart geometry only

  function pct(x) {
    return x === null || x === undefined ? "-" : `${(100 * x).toFixed(1)} %`;
  }

  function days(x) {
    return x === null || x === undefined ? "-" : x.toFixed(1);
  }

  function when(ms) {
    if (!ms) return "-";
    return new Date(ms).toISOString().slice(0, 16).replace("T", " ") + " UTC";
  }

  function signed(x) {
    return `${x > 0 ? "+" : ""}${x.toFixed(1)}`;
  }

  class ApiError extends Error {
    constructor(path, status, detail) {
      super(`${path}: ${status}${detail ? " " + detail : ""}`);
      this.status = status;
      this.detail = detail;
    }
  }

  async function api(path) {
    let resp;
    try {
      resp = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
    } catch (err) {
      throw new ApiError(path, 0, "the worker does not answer");
    }
    if (!resp.ok) {
      let detail = "";
      try {
        const body = await resp.json();
        detail = body.error || "";
        if (Array.isArray(body.missing) && body.missing.length) detail += `: ${body.missing.join("; ")}`;
      } catch (err) {
        detail = resp.statusText;
      }
      throw new ApiError(path, resp.status, detail);
    }
    return resp.json();
  }

  function explain(err) {
    if (err.status === 401) {
      return "the API needs a bearer token (SALESOPS_API_TOKEN): open this page through a proxy that adds the Authorization header";
    }
    if (err.status === 503) return `not ready: ${err.detail}`;
    return err.message;
  }

  function pipelineRank(pipeline) {
    const known = [...state.order.keys()];
    const i = known.indexOf(pipeline);
    return i < 0 ? known.length : i;
  }

  function stageRank(pipeline, stage) {
    const stages = state.order.get(pipeline) || [];
    const i = stages.indexOf(stage);
    return i < 0 ? stages.length : i;
  }

  // configured pipeline and stage order; unknown ones after, by name
  function byStageOrder(a, b) {
    return (
      pipelineRank(a.pipeline) - pipelineRank(b.pipeline) ||
      a.pipeline.localeCompare(b.pipeline) ||
      stageRank(a.pipeline, a.stage) - stageRank(b.pipeline, b.stage) ||
      a.stage.localeCompare(b.stage)
    );
  }

  function chart(id, config) {
    if (typeof window.Chart === "undefined") return; // tables still render
    const existing = state.charts[id];
    if (existing) {
      existing.data = config.data;
      existing.options = config.options;
      existing.update("none");
      return;
    }
    state.charts[id] = new window.Chart($(id), config);
  }

  function baseOptions(extra) {
    return {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      plugins: { legend: { position: "bottom" } },
      ...(extra || {}),
    };
  }

  const stageLabel = (r) => [r.stage, r.pipeline];

  // ------------------------------------------------------------------ views

  function renderPipeline(data) {
    setText("as-of", when(data.as_of));
    setText("currency", data.currency);
    const rows = [...data.by_stage].sort(byStageOrder);
    const body = rows.map((r) =>
      el(
        "tr",
        { data: { pipeline: r.pipeline, stage: r.stage } },
        td(r.pipeline),
        td(r.stage),
        num(r.deals, "deals"),
        num(money(r.value), "value"),
        num(money(r.weighted_value), "weighted")
      )
    );
    $("pipeline-table").tBodies[0].replaceChildren(...body);
    let deals = 0;
    let value = 0n;
    let weighted = 0n;
    for (const r of rows) {
      deals += r.deals;
      value += cents(r.value);
      weighted += cents(r.weighted_value);
    }
    $("pipeline-table").tFoot.replaceChildren(
      el(
        "tr",
        { class: "total" },
        td("all pipelines"),
        td(""),
        num(deals, "deals"),
        num(centsText(value), "value"),
        num(centsText(weighted), "weighted")
      )
    );
    setText("total-deals", String(deals));
    setText("total-value", `${centsText(value)} ${data.currency}`);
    setText("total-weighted", `${centsText(weighted)} ${data.currency}`);
    chart("pipeline-chart", {
      type: "bar",
      data: {
        labels: rows.map(stageLabel),
        datasets: [
          { label: `open value (${data.currency})`, data: rows.map((r) => float(r.value)), backgroundColor: COLORS.value },
          { label: `weighted value (${data.currency})`, data: rows.map((r) => float(r.weighted_value)), backgroundColor: COLORS.weighted },
        ],
      },
      options: baseOptions(),
    });
    document.body.dataset.pipelineAsOf = String(data.as_of);
  }

  function renderFunnel(data) {
    state.order = new Map(data.pipelines.map((p) => [p.pipeline, p.stages.map((s) => s.stage)]));
    const cards = data.pipelines.map((p) =>
      el(
        "div",
        { class: "card", data: { pipeline: p.pipeline } },
        el("h3", {}, p.pipeline),
        el(
          "dl",
          {},
          el("dt", {}, "win rate (count / value)"),
          el("dd", {}, `${pct(p.win_rate_count)} / ${pct(p.win_rate_value)}`),
          el("dt", {}, "won"),
          el("dd", {}, `${p.won_count} deals, ${money(p.won_value)}`),
          el("dt", {}, "lost"),
          el("dd", {}, `${p.lost_count} deals, ${money(p.lost_value)}`),
          el("dt", {}, "average deal size"),
          el("dd", {}, money(p.avg_deal_size)),
          el("dt", {}, "sales cycle"),
          el("dd", {}, p.avg_cycle_days === null ? "-" : `${days(p.avg_cycle_days)} days`),
          el("dt", {}, "velocity"),
          el("dd", {}, p.sales_velocity_per_day === null ? "-" : `${money(p.sales_velocity_per_day.toFixed(2))} per day`)
        )
      )
    );
    $("funnel-summary").replaceChildren(...cards);
    const rows = data.pipelines.flatMap((p) => p.stages.map((s) => ({ pipeline: p.pipeline, ...s })));
    $("funnel-table").tBodies[0].replaceChildren(
      ...rows.map((r) =>
        el(
          "tr",
          { data: { pipeline: r.pipeline, stage: r.stage } },
          td(r.pipeline),
          td(r.stage),
          num(r.entered),
          num(r.exited),
          num(r.advanced),
          num(r.regressed),
          num(pct(r.window_conversion)),
          num(pct(r.cohort_conversion))
        )
      )
    );
    const toPct = (x) => (x === null ? null : 100 * x);
    chart("funnel-chart", {
      type: "bar",
      data: {
        labels: rows.map(stageLabel),
        datasets: [
          { label: "conversion, window (%)", data: rows.map((r) => toPct(r.window_conversion)), backgroundColor: COLORS.window },
          { label: "conversion, cohort (%)", data: rows.map((r) => toPct(r.cohort_conversion)), backgroundColor: COLORS.cohort },
        ],
      },
      options: baseOptions({ scales: { y: { min: 0, max: 100 } } }),
    });
  }

  function renderWinRate(data) {
    let won = 0;
    let lost = 0;
    for (const p of data.pipelines) {
      won += p.won_count;
      lost += p.lost_count;
    }
    setText("total-win-rate", won + lost ? `${pct(won / (won + lost))} (${won} of ${won + lost})` : "-");
  }

  function renderAging(data) {
    const rows = [...data.stages].sort(byStageOrder);
    $("aging-table").tBodies[0].replaceChildren(
      ...rows.map((r) =>
        el(
          "tr",
          { data: { pipeline: r.pipeline, stage: r.stage } },
          td(r.pipeline),
          td(r.stage),
          num(r.open),
          num(days(r.median_days)),
          num(days(r.p90_days)),
          num(days(r.max_days))
        )
      )
    );
    chart("aging-chart", {
      type: "bar",
      data: {
        labels: rows.map(stageLabel),
        datasets: [
          { label: "median days in stage", data: rows.map((r) => r.median_days), backgroundColor: COLORS.median },
          { label: "p90 days in stage", data: rows.map((r) => r.p90_days), backgroundColor: COLORS.p90 },
        ],
      },
      options: baseOptions(),
    });
  }

  const MOVES = [
    ["new", 1],
    ["reopened", 1],
    ["increased", 1],
    ["decreased", -1],
    ["won", -1],
    ["lost", -1],
    ["deleted", -1],
  ];

  function renderMovement(data) {
    if (/^\d{4}-\d{2}$/.test(data.period)) state.month = data.period;
    setText("movement-label", data.period);
    $("movement-table").tBodies[0].replaceChildren(
      ...data.pipelines.map((r) =>
        el(
          "tr",
          { data: { pipeline: r.pipeline } },
          td(r.pipeline),
          ...["start", ...MOVES.map((m) => m[0]), "end"].map((k) => num(money(r[k])))
        )
      )
    );
    // waterfall of all pipelines: start, each change as a floating bar, end
    const total = (k) => data.pipelines.reduce((acc, r) => acc + cents(r[k]), 0n);
    const labels = ["start"];
    const bars = [];
    const colors = [COLORS.total];
    const start = total("start");
    bars.push([0, Number(start) / 100]);
    let level = start;
    for (const [k, sign] of MOVES) {
      const next = level + BigInt(sign) * total(k);
      labels.push(k);
      bars.push([Number(level) / 100, Number(next) / 100]);
      colors.push(sign > 0 ? COLORS.up : COLORS.down);
      level = next;
    }
    labels.push("end");
    bars.push([0, Number(total("end")) / 100]);
    colors.push(COLORS.total);
    chart("movement-chart", {
      type: "bar",
      data: { labels, datasets: [{ label: "open pipeline value, all pipelines", data: bars, backgroundColor: colors }] },
      options: baseOptions({
        plugins: {
          legend: { display: false },
          tooltip: {
            callbacks: {
              label: (ctx) => {
                const [lo, hi] = ctx.raw;
                return ` ${(hi - lo).toLocaleString("en-US", { maximumFractionDigits: 2 })}`;
              },
            },
          },
        },
      }),
    });
  }

  function enpsCell(row) {
    if (!row) return num("-", "enps");
    if (row.suppressed) {
      return num(`suppressed (${row.responses} responses)`, "enps suppressed");
    }
    const title = `promoters ${row.promoters}, passives ${row.passives}, detractors ${row.detractors}`;
    return num(`${signed(row.enps)} \u00b1 ${row.margin_of_error.toFixed(1)}`, "enps", { title });
  }

  function renderEnps(w30, w90) {
    setText("enps-threshold", `groups with fewer than ${w30.threshold} responses are suppressed`);
    const m30 = new Map(w30.groups.map((g) => [g.group, g]));
    const m90 = new Map(w90.groups.map((g) => [g.group, g]));
    const groups = [...w90.groups.map((g) => g.group), ...w30.groups.map((g) => g.group).filter((g) => !m90.has(g))];
    $("enps-table").tBodies[0].replaceChildren(
      ...groups.map((g) => {
        const a = m30.get(g);
        const b = m90.get(g);
        return el(
          "tr",
          { data: { group: g } },
          td(g),
          enpsCell(a),
          num(a ? a.responses : "-"),
          enpsCell(b),
          num(b ? b.responses : "-")
        );
      })
    );
    const org = m30.get("org");
    setText(
      "org-enps",
      !org ? "no answers" : org.suppressed ? `suppressed (${org.responses} responses)` : signed(org.enps)
    );
    const score = (row) => (row && !row.suppressed ? row.enps : null);
    chart("enps-chart", {
      type: "bar",
      data: {
        // a suppressed group keeps its label, with its count and no bar
        labels: groups.map((g) => {
          const hidden = [m30.get(g), m90.get(g)].filter((r) => r && r.suppressed);
          return hidden.length ? `${g} (suppressed, ${hidden[0].responses} responses)` : g;
        }),
        datasets: [
          { label: "eNPS, 30 days", data: groups.map((g) => score(m30.get(g))), backgroundColor: COLORS.enps30 },
          { label: "eNPS, 90 days", data: groups.map((g) => score(m90.get(g))), backgroundColor: COLORS.enps90 },
        ],
      },
      options: baseOptions({ indexAxis: "y", scales: { x: { min: -100, max: 100 } } }),
    });
  }

  function renderAlerts(data, asOf) {
    const alerts = [...data.alerts].sort((a, b) => a.entered_at - b.entered_at);
    setText("total-alerts", String(alerts.length));
    setText("alerts-count", `(${alerts.length})`);
    const rows = alerts.slice(0, MAX_ALERT_ROWS).map((a) =>
      el(
        "tr",
        { data: { alert: a.alert_id } },
        td(a.deal_id || a.subject || "-"),
        td(a.pipeline),
        td(a.stage),
        num(asOf ? days(Math.max(0, asOf - a.entered_at) / DAY_MS) : "-"),
        td(when(a.fired_at))
      )
    );
    if (alerts.length > MAX_ALERT_ROWS) {
      rows.push(
        el("tr", { class: "more" }, el("td", { colspan: 5 }, `... and ${alerts.length - MAX_ALERT_ROWS} more (api/alerts?status=FIRING)`))
      );
    }
    if (!alerts.length) rows.push(el("tr", { class: "more" }, el("td", { colspan: 5 }, "none")));
    $("alerts-table").tBodies[0].replaceChildren(...rows);
  }

  // ------------------------------------------------------------------ refresh

  function movementPath() {
    if ($("movement-period").value === "quarter" && state.month) {
      const [y, m] = state.month.split("-").map(Number);
      return `api/movement?period=${y}-Q${Math.floor((m - 1) / 3) + 1}`;
    }
    return "api/movement";
  }

  async function refresh() {
    clearTimeout(state.timer);
    const period = $("funnel-period").value;
    const requests = {
      funnel: api(`api/funnel?period=${encodeURIComponent(period)}`),
      funnel30: period === "last-30d" ? null : api("api/funnel?period=last-30d"),
      pipeline: api("api/pipeline"),
      aging: api("api/aging"),
      movement: api(movementPath()),
      enps30: api("api/enps?window=30d"),
      enps90: api("api/enps?window=90d"),
      alerts: api("api/alerts?status=FIRING"),
    };
    const names = Object.keys(requests);
    const settled = await Promise.allSettled(names.map((n) => requests[n] || Promise.resolve(null)));
    const got = {};
    const problems = [];
    names.forEach((n, i) => {
      if (settled[i].status === "fulfilled") got[n] = settled[i].value;
      else problems.push(explain(settled[i].reason));
    });
    const steps = [
      // the funnel first: it gives the configured stage order the other views use
      ["funnel", () => renderFunnel(got.funnel)],
      ["funnel", () => renderWinRate(got.funnel30 || got.funnel)],
      ["pipeline", () => renderPipeline(got.pipeline)],
      ["aging", () => renderAging(got.aging)],
      ["movement", () => renderMovement(got.movement)],
      ["enps30", () => got.enps90 && renderEnps(got.enps30, got.enps90)],
      ["alerts", () => renderAlerts(got.alerts, got.pipeline ? got.pipeline.as_of : null)],
    ];
    for (const [need, draw] of steps) {
      if (!got[need]) continue;
      try {
        draw();
      } catch (err) {
        problems.push(`${need}: ${err.message}`);
      }
    }
    const status = $("status");
    status.className = problems.length ? "problem" : "ok";
    status.textContent = problems.length
      ? [...new Set(problems)].join(" | ")
      : `live, updated ${new Date().toLocaleTimeString()}`;
    state.timer = setTimeout(refresh, REFRESH_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("funnel-period").addEventListener("change", refresh);
    $("movement-period").addEventListener("change", refresh);
    refresh();
  });
})();
