/**
 * Inline SVG charts for the report: a line (or area) chart over a time axis and a
 * grouped bar chart. Static markup only (no script): tooltips are SVG `<title>`s.
 *
 * Every chart's `<svg>` carries `data-chart="<name>"`, and every series element
 * `data-series="<name>"` with `data-values` (a JSON array of the plotted numbers) and,
 * for time series, `data-times` (JSON ISO times), so a test or a tool can read the
 * plotted figures back. Every text that comes from the repository is escaped.
 */
import { formatBytes } from '../units.js';

/** Escapes text for HTML/SVG content and double- or single-quoted attributes. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** How a value axis labels its ticks. */
export type ValueKind = 'bytes' | 'ratio';

export interface LineSeries {
  readonly name: string;
  readonly label: string;
  readonly color: string;
  readonly times: readonly string[];
  readonly values: readonly number[];
  /** Fill the area under the line. */
  readonly area?: boolean;
}

export interface LineChartSpec {
  readonly name: string;
  readonly title: string;
  readonly description: string;
  readonly kind: ValueKind;
  readonly series: readonly LineSeries[];
}

export interface BarSeries {
  readonly name: string;
  readonly label: string;
  readonly color: string;
  /** One value per group. */
  readonly values: readonly number[];
}

export interface BarChartSpec {
  readonly name: string;
  readonly title: string;
  readonly description: string;
  readonly kind: ValueKind;
  readonly groups: readonly string[];
  readonly series: readonly BarSeries[];
}

const WIDTH = 760;
const HEIGHT = 280;
const M = { left: 76, right: 18, top: 14, bottom: 40 };
const PLOT_W = WIDTH - M.left - M.right;
const PLOT_H = HEIGHT - M.top - M.bottom;
/** Above this many samples a series is drawn without a marker per sample. */
const MAX_MARKERS = 60;

/** A deterministic element id for a chart (FNV-1a of its name: names are unique within a page). */
function chartId(name: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return `chart-${h.toString(36)}`;
}

function num(v: number): string {
  return String(Math.round(v * 10) / 10);
}

/** Formats a tick or value label of the given kind. */
export function formatValue(v: number, kind: ValueKind): string {
  if (kind === 'bytes') return formatBytes(v);
  return v === 0 ? '0' : `${Number(v.toFixed(2))}x`;
}

/** 1, 2, 2.5 or 5 times a power of ten, at least `raw`. */
function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

/** A byte step: a quarter or a half of `unit` (256 KiB, 512 KiB), else a nice number of units, never below 1 B. */
function byteStep(raw: number, unit: number): number {
  const r = raw / unit;
  if (unit > 1 && r <= 0.25) return unit / 4;
  if (unit > 1 && r <= 0.5) return unit / 2;
  return Math.max(1, niceStep(r)) * unit;
}

/**
 * Value-axis ticks from 0 to at least `max` (4-6 intervals). Byte steps are nice
 * numbers of the largest binary unit below `max`, so labels read "1.50 MiB", not
 * "1572864 B".
 */
export function valueTicks(max: number, kind: ValueKind): number[] {
  const top = max > 0 ? max : kind === 'bytes' ? 1024 : 1;
  const unit = kind === 'bytes' ? 1024 ** Math.max(0, Math.floor(Math.log(top) / Math.log(1024))) : 1;
  const step = kind === 'bytes' ? byteStep(top / 5, unit) : niceStep(top / 5);
  const ticks: number[] = [];
  for (let v = 0; ticks.length === 0 || ticks[ticks.length - 1]! < top - step * 1e-9; v += step) ticks.push(Number((v / unit).toPrecision(12)) * unit);
  return ticks;
}

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
/** Round time steps; ticks fall on multiples of one of them (UTC). */
const TIME_STEPS = [1, 2, 5, 10, 15, 30].map((n) => n * SECOND).concat([1, 2, 5, 10, 15, 30].map((n) => n * MINUTE), [1, 2, 3, 6, 12].map((n) => n * HOUR), [1, 2, 7, 14, 30, 91, 365].map((n) => n * DAY));
/** At most this many time ticks on an axis. */
const MAX_TIME_TICKS = 6;

/** A tick label for a time, as precise as a tick step of `stepMs` needs (UTC). */
export function formatTime(ms: number, stepMs: number, spanMs = stepMs): string {
  const iso = new Date(ms).toISOString();
  if (stepMs >= DAY) return iso.slice(0, 10);
  if (stepMs >= MINUTE) return spanMs >= DAY ? `${iso.slice(5, 10)} ${iso.slice(11, 16)}` : iso.slice(11, 16);
  if (stepMs >= SECOND) return iso.slice(11, 19);
  return iso.slice(11, 23);
}

/**
 * Time-axis ticks: the multiples of the smallest round step that gives at most
 * MAX_TIME_TICKS ticks in [minMs, maxMs], labelled exactly. A span too short for two
 * such ticks is labelled at its two ends (to the millisecond when it is under a second).
 */
export function timeTicks(minMs: number, maxMs: number): { ms: number; label: string }[] {
  const span = maxMs - minMs;
  if (span === 0) return [{ ms: minMs, label: formatTime(minMs, SECOND) }];
  const step = TIME_STEPS.find((st) => span / st < MAX_TIME_TICKS) ?? Math.ceil(span / MAX_TIME_TICKS / DAY) * DAY;
  const ticks: number[] = [];
  for (let t = Math.ceil(minMs / step) * step; t <= maxMs; t += step) ticks.push(t);
  if (ticks.length >= 2) return ticks.map((t) => ({ ms: t, label: formatTime(t, step, span) }));
  const endStep = span < SECOND ? 1 : SECOND;
  return [minMs, maxMs].map((t) => ({ ms: t, label: formatTime(t, endStep, span) }));
}

function svgOpen(name: string, title: string, description: string, height = HEIGHT): { open: string; id: string } {
  const id = chartId(name);
  const open =
    `<svg data-chart="${escapeHtml(name)}" viewBox="0 0 ${WIDTH} ${height}" width="${WIDTH}" height="${height}" role="img" aria-labelledby="${id}-t ${id}-d">` +
    `<title id="${id}-t">${escapeHtml(title)}</title><desc id="${id}-d">${escapeHtml(description)}</desc>`;
  return { open, id };
}

function valueAxis(ticks: readonly number[], kind: ValueKind, y: (v: number) => number): string {
  return ticks
    .map((t) => {
      const ty = num(y(t));
      return `<line class="grid" x1="${M.left}" x2="${WIDTH - M.right}" y1="${ty}" y2="${ty}"/><text class="tick" x="${M.left - 8}" y="${ty}" dy="0.32em" text-anchor="end">${escapeHtml(formatValue(t, kind))}</text>`;
    })
    .join('');
}

function timeAxis(minMs: number, maxMs: number, x: (ms: number) => number): string {
  const parts = timeTicks(minMs, maxMs).map(({ ms, label }) => {
    const tx = x(ms);
    // Labels near either edge of the plot are anchored inwards so they are not cut off.
    const anchor = tx > WIDTH - M.right - 40 ? 'end' : tx < M.left + 20 ? 'start' : 'middle';
    return `<line class="axis" x1="${num(tx)}" x2="${num(tx)}" y1="${M.top + PLOT_H}" y2="${M.top + PLOT_H + 5}"/><text class="tick" x="${num(tx)}" y="${M.top + PLOT_H + 18}" text-anchor="${anchor}">${escapeHtml(label)}</text>`;
  });
  const base = `<line class="axis" x1="${M.left}" x2="${WIDTH - M.right}" y1="${M.top + PLOT_H}" y2="${M.top + PLOT_H}"/>`;
  const label = `<text class="axis-label" x="${M.left + PLOT_W / 2}" y="${HEIGHT - 4}" text-anchor="middle">time (UTC)</text>`;
  return base + parts.join('') + label;
}

function seriesAttrs(s: { name: string; values: readonly number[]; times?: readonly string[] }): string {
  const times = s.times ? ` data-times="${escapeHtml(JSON.stringify(s.times))}"` : '';
  return `data-series="${escapeHtml(s.name)}" data-values="${escapeHtml(JSON.stringify(s.values))}"${times}`;
}

function lineSeries(s: LineSeries, kind: ValueKind, x: (ms: number) => number, y: (v: number) => number): string {
  const pts = s.values.map((v, i) => [x(Date.parse(s.times[i]!)), y(v)] as const);
  if (pts.length === 0) return `<path ${seriesAttrs(s)} d=""/>`;
  const d = pts.map(([px, py], i) => `${i === 0 ? 'M' : 'L'}${num(px)} ${num(py)}`).join(' ');
  const base = num(y(0));
  const area = s.area ? `<path class="area" fill="${s.color}" d="${d} L${num(pts[pts.length - 1]![0])} ${base} L${num(pts[0]![0])} ${base} Z"/>` : '';
  const markers =
    pts.length <= MAX_MARKERS
      ? pts.map(([px, py], i) => `<circle cx="${num(px)}" cy="${num(py)}" r="3" fill="${s.color}"><title>${escapeHtml(`${s.label} ${s.times[i]}: ${formatValue(s.values[i]!, kind)}`)}</title></circle>`).join('')
      : '';
  return `<g class="series">${area}<path ${seriesAttrs(s)} class="line" stroke="${s.color}" d="${d}"/>${markers}</g>`;
}

/** A line chart over time; series may hold different times (each sample at its own time). */
export function lineChart(spec: LineChartSpec): string {
  const times = spec.series.flatMap((s) => s.times.map((t) => Date.parse(t)));
  const minMs = times.length ? Math.min(...times) : 0;
  const maxMs = times.length ? Math.max(...times) : 0;
  const ticks = valueTicks(Math.max(0, ...spec.series.flatMap((s) => s.values)), spec.kind);
  const top = ticks[ticks.length - 1]!;
  const x = (ms: number) => (maxMs === minMs ? M.left + PLOT_W / 2 : M.left + ((ms - minMs) / (maxMs - minMs)) * PLOT_W);
  const y = (v: number) => M.top + PLOT_H - (v / top) * PLOT_H;
  const { open } = svgOpen(spec.name, spec.title, spec.description);
  const body = valueAxis(ticks, spec.kind, y) + timeAxis(minMs, maxMs, x) + spec.series.map((s) => lineSeries(s, spec.kind, x, y)).join('');
  return `<figure class="chart">${open}${body}</svg>${legend(spec.series)}</figure>`;
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}\u2026`;
}

/** A grouped bar chart: one group per entry of `groups`, one bar per series in each. */
export function barChart(spec: BarChartSpec): string {
  const ticks = valueTicks(Math.max(0, ...spec.series.flatMap((s) => s.values)), spec.kind);
  const top = ticks[ticks.length - 1]!;
  const y = (v: number) => M.top + PLOT_H - (v / top) * PLOT_H;
  const groupW = PLOT_W / Math.max(1, spec.groups.length);
  const barW = Math.min(42, (groupW * 0.7) / Math.max(1, spec.series.length));
  const rotate = spec.groups.length > 8;
  const height = rotate ? HEIGHT + 60 : HEIGHT;
  const { open } = svgOpen(spec.name, spec.title, spec.description, height);
  const bars = spec.series
    .map((s, si) => {
      const rects = s.values.map((v, gi) => {
        const bx = M.left + gi * groupW + (groupW - barW * spec.series.length) / 2 + si * barW;
        const by = y(v);
        const label = `${spec.groups[gi] ?? ''}: ${s.label} ${formatValue(v, spec.kind)}`;
        return `<rect x="${num(bx)}" y="${num(by)}" width="${num(barW - 2)}" height="${num(M.top + PLOT_H - by)}" fill="${s.color}"><title>${escapeHtml(label)}</title></rect>`;
      });
      return `<g ${seriesAttrs(s)}>${rects.join('')}</g>`;
    })
    .join('');
  const labels = spec.groups
    .map((g, gi) => {
      const gx = num(M.left + gi * groupW + groupW / 2);
      const gy = M.top + PLOT_H + 18;
      const transform = rotate ? ` transform="rotate(-35 ${gx} ${gy})" text-anchor="end"` : ' text-anchor="middle"';
      return `<text class="tick" x="${gx}" y="${gy}"${transform}>${escapeHtml(truncate(g, rotate ? 18 : Math.max(6, Math.floor(groupW / 7))))}<title>${escapeHtml(g)}</title></text>`;
    })
    .join('');
  const base = `<line class="axis" x1="${M.left}" x2="${WIDTH - M.right}" y1="${M.top + PLOT_H}" y2="${M.top + PLOT_H}"/>`;
  return `<figure class="chart">${open}${valueAxis(ticks, spec.kind, y)}${bars}${base}${labels}</svg>${legend(spec.series)}</figure>`;
}

function legend(series: readonly { name: string; label: string; color: string }[]): string {
  const items = series.map((s) => `<li><span class="swatch" style="background:${s.color}"></span>${escapeHtml(s.label)}</li>`).join('');
  return `<figcaption><ul class="legend">${items}</ul></figcaption>`;
}
