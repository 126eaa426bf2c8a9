// The Queues view's chart: plain SVG, no library. Two panels over the last hour:
// depth (ready, scheduled, running, dead) as lines, throughput (finished, failed per minute) as bars.

const NS = "http://www.w3.org/2000/svg";
const WIDTH = 900, PANEL = 140, GAP = 34, LEFT = 46, RIGHT = 10, TOP = 18;
export const DEPTH = [
  ["ready", "#2563eb"], ["scheduled", "#9333ea"], ["running", "#059669"], ["dead", "#b91c1c"],
];
export const FLOW = [["processed", "#0ea5e9"], ["failed", "#dc2626"]];

function el(name, attrs, parent) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.append(node);
  return node;
}

function label(parent, x, y, value, anchor = "end") {
  const t = el("text", { x, y, "text-anchor": anchor, class: "axis" }, parent);
  t.textContent = value;
}

function nice(max) {
  if (max <= 4) return 4;
  const step = Math.pow(10, Math.floor(Math.log10(max)));
  return Math.ceil(max / step) * step;
}

function frame(svg, top, title, max, window) {
  el("rect", { x: LEFT, y: top, width: WIDTH - LEFT - RIGHT, height: PANEL, class: "plot" }, svg);
  label(svg, LEFT, top - 5, title, "start");
  for (const frac of [0, 0.5, 1]) {
    const y = top + PANEL - frac * PANEL;
    el("line", { x1: LEFT, x2: WIDTH - RIGHT, y1: y, y2: y, class: "grid" }, svg);
    label(svg, LEFT - 4, y + 4, String(Math.round(max * frac)));
  }
  for (const minutes of [60, 45, 30, 15, 0]) {
    const x = LEFT + (1 - (minutes * 60) / window) * (WIDTH - LEFT - RIGHT);
    label(svg, x, top + PANEL + 13, minutes ? `-${minutes} min` : "now", "middle");
  }
}

// `points`: [{t (ms), ready, scheduled, running, dead, processed, failed, span (s)}], oldest first.
export function drawChart(svg, points, window, now) {
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${WIDTH} ${TOP + 2 * PANEL + GAP + 20}`);
  const x = (t) => LEFT + (1 - (now - t) / 1000 / window) * (WIDTH - LEFT - RIGHT);
  const depthMax = nice(Math.max(0, ...points.flatMap((p) => DEPTH.map(([k]) => p[k] || 0))));
  const rate = (p, k) => (p[k] === null || !p.span ? null : (p[k] * 60) / p.span);
  const flowMax = nice(Math.max(0, ...points.flatMap((p) => FLOW.map(([k]) => rate(p, k) || 0))));
  const top2 = TOP + PANEL + GAP;
  frame(svg, TOP, "depth (jobs)", depthMax, window);
  frame(svg, top2, "finished per minute", flowMax, window);
  for (const [key, color] of DEPTH) {
    const coords = points.filter((p) => p[key] !== null && p[key] !== undefined)
      .map((p) => `${x(p.t).toFixed(1)},${(TOP + PANEL - (p[key] / depthMax) * PANEL).toFixed(1)}`);
    if (coords.length) el("polyline", { points: coords.join(" "), stroke: color, class: `line ${key}` }, svg);
  }
  const barWidth = (p) => Math.max(1, ((p.span || 5) / window) * (WIDTH - LEFT - RIGHT) - 1);
  for (const [key, color] of FLOW) {
    for (const p of points) {
      const r = rate(p, key);
      if (!r) continue;
      const h = (r / flowMax) * PANEL;
      el("rect", {
        x: (x(p.t) - barWidth(p)).toFixed(1), y: (top2 + PANEL - h).toFixed(1),
        width: barWidth(p).toFixed(1), height: h.toFixed(1), fill: color, class: `bar ${key}`,
      }, svg);
    }
  }
}
