/**
 * The report page: one self-contained HTML file (inline CSS and SVG, no script, no
 * external resource), readable offline and printable. Charts, by `data-chart` name:
 *
 *   repo-size          timeline logicalBytes ("logical") and storedBytes ("stored")
 *   ratios             timeline dedupRatio ("dedup") and compressionRatio ("compression")
 *   vm-space           per VM exclusiveBytes ("exclusive") and sharedBytes ("shared")
 *   vm-size:<vm>       per VM logicalBytes ("logical") and storedBytes ("stored")
 *
 * Tables: summary figures, disks, and the largest contributors to growth.
 */
import type { RepoStats } from '../../engine/index.js';
import { formatBytes, formatRatio } from '../units.js';
import type { ReportData, VmSeries } from './model.js';
import { barChart, escapeHtml, lineChart } from './svg.js';

export interface PageInfo {
  /** The repository directory, as shown in the heading. */
  readonly repo: string;
  /** ISO time the report was made. */
  readonly generatedAt: string;
}

/** The VMs the space bar chart shows at most (the largest by exclusive + shared). */
export const MAX_BAR_VMS = 24;

const COLORS = { logical: '#4c78a8', stored: '#e45756', dedup: '#54a24b', compression: '#b279a2', exclusive: '#f58518', shared: '#72b7b2' };

const CSS = `
:root{color-scheme:light;--fg:#1f2933;--muted:#616e7c;--line:#d9e2ec;--bg:#f5f7fa}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
main{max-width:840px;margin:0 auto;padding:28px 20px 48px}
header h1{font-size:22px;margin:0 0 4px}
header p{margin:0;color:var(--muted)}
h2{font-size:17px;margin:32px 0 4px}
h3{font-size:15px;margin:20px 0 4px}
p.note{color:var(--muted);margin:0 0 10px;font-size:13px}
section{margin-top:8px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px;margin:20px 0 0;padding:0}
.cards div{background:#fff;border:1px solid var(--line);border-radius:6px;padding:10px 12px}
.cards dt{color:var(--muted);font-size:12px}
.cards dd{margin:2px 0 0;font-size:18px;font-weight:600}
figure.chart{margin:8px 0 0;background:#fff;border:1px solid var(--line);border-radius:6px;padding:10px 10px 4px}
figure.chart svg{display:block;max-width:100%;height:auto;font-size:11px}
svg .grid{stroke:#e4e7eb}
svg .axis{stroke:#9aa5b1}
svg .tick{fill:var(--muted)}
svg .axis-label{fill:var(--muted)}
svg .line{fill:none;stroke-width:2}
svg .area{fill-opacity:.12;stroke:none}
ul.legend{list-style:none;margin:4px 0 4px 66px;padding:0;display:flex;gap:18px;font-size:12px;color:var(--muted)}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px;vertical-align:-1px}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid var(--line);border-radius:6px;margin-top:8px;font-size:13px}
th,td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap}
th{font-weight:600;color:var(--muted);background:#fafbfc}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.name{white-space:normal;word-break:break-all}
code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px}
.empty{background:#fff;border:1px dashed var(--line);border-radius:6px;padding:28px;text-align:center;color:var(--muted);margin-top:20px}
footer{margin-top:36px;color:var(--muted);font-size:12px}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
`;

function percent(share: number): string {
  return `${(share * 100).toFixed(1)} %`;
}

function cards(s: RepoStats): string {
  const items: [string, string][] = [
    ['points', String(s.points)],
    ['VMs', String(s.vms)],
    ['logical', formatBytes(s.logicalBytes)],
    ['stored', formatBytes(s.storedBytes)],
    ['dedup ratio', formatRatio(s.dedupRatio)],
    ['compression ratio', formatRatio(s.compressionRatio)],
    ['total ratio', formatRatio(s.totalRatio)],
    ['unique chunks', String(s.uniqueChunks)],
  ];
  return `<dl class="cards">${items.map(([k, v]) => `<div><dt>${escapeHtml(k)}</dt><dd>${escapeHtml(v)}</dd></div>`).join('')}</dl>`;
}

/** An HTML table; cells are escaped, `numeric` columns right-aligned. */
function htmlTable(caption: string, headers: readonly string[], rows: readonly (readonly string[])[], numeric: readonly number[], nameCols: readonly number[] = []): string {
  const cls = (i: number) => (numeric.includes(i) ? ' class="num"' : nameCols.includes(i) ? ' class="name"' : '');
  const head = headers.map((h, i) => `<th scope="col"${cls(i)}>${escapeHtml(h)}</th>`).join('');
  const body = rows.map((r) => `<tr>${r.map((c, i) => `<td${cls(i)}>${escapeHtml(c)}</td>`).join('')}</tr>`).join('');
  return `<table><caption class="sr">${escapeHtml(caption)}</caption><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

function growthSection(d: ReportData): string {
  const t = d.timeline;
  const size = lineChart({
    name: 'repo-size',
    title: 'Repository: logical vs stored size over time',
    description: 'Running sums over all points in time order: logical bytes of every point (each a full image) and stored bytes added by their backups.',
    kind: 'bytes',
    series: [
      { name: 'logical', label: 'logical (all points)', color: COLORS.logical, times: t.times, values: t.logicalBytes, area: true },
      { name: 'stored', label: 'stored (bytes added)', color: COLORS.stored, times: t.times, values: t.storedBytes, area: true },
    ],
  });
  const ratios = lineChart({
    name: 'ratios',
    title: 'Dedup and compression ratio trends',
    description: 'After each point: non-zero logical bytes over raw bytes of the chunks added so far (dedup), and those raw bytes over their stored payload (compression).',
    kind: 'ratio',
    series: [
      { name: 'dedup', label: 'dedup ratio', color: COLORS.dedup, times: t.times, values: t.dedupRatio },
      { name: 'compression', label: 'compression ratio', color: COLORS.compression, times: t.times, values: t.compressionRatio },
    ],
  });
  return (
    `<section><h2>Repository growth</h2><p class="note">Every point is a full image: logical size grows with each backup, stored size only by what was new.</p>${size}</section>` +
    `<section><h2>Ratio trends</h2><p class="note">Running dedup and compression ratios after each point (zero-filled space is not counted).</p>${ratios}</section>`
  );
}

function spaceSection(d: ReportData): string {
  const vms = [...d.vms].sort((a, b) => b.exclusiveBytes + b.sharedBytes - (a.exclusiveBytes + a.sharedBytes) || (a.vm < b.vm ? -1 : 1)).slice(0, MAX_BAR_VMS);
  const chart = barChart({
    name: 'vm-space',
    title: 'Exclusive vs shared space per VM',
    description: 'Stored bytes each VM\u2019s backups wrote, split into chunks a single point holds (exclusive) and chunks several points reference (shared).',
    kind: 'bytes',
    groups: vms.map((v) => v.vm),
    series: [
      { name: 'exclusive', label: 'exclusive (one point holds it)', color: COLORS.exclusive, values: vms.map((v) => v.exclusiveBytes) },
      { name: 'shared', label: 'shared (several points)', color: COLORS.shared, values: vms.map((v) => v.sharedBytes) },
    ],
  });
  const more = d.vms.length > vms.length ? ` The ${vms.length} largest of ${d.vms.length} VMs are shown.` : '';
  return `<section><h2>Exclusive vs shared space per VM</h2><p class="note">Each chunk is charged to the VM whose backup stored it first. Exclusive space is freed by deleting the point that holds it.${escapeHtml(more)}</p>${chart}</section>`;
}

function vmChart(v: VmSeries): string {
  return lineChart({
    name: `vm-size:${v.vm}`,
    title: `VM ${v.vm}: logical vs stored size over time`,
    description: `Per point of VM ${v.vm}: the sum of its disks' latest sizes (logical) and the running sum of bytes its backups added (stored).`,
    kind: 'bytes',
    series: [
      { name: 'logical', label: 'logical (VM size)', color: COLORS.logical, times: v.times, values: v.logicalBytes, area: true },
      { name: 'stored', label: 'stored (bytes added)', color: COLORS.stored, times: v.times, values: v.storedBytes, area: true },
    ],
  });
}

function vmSections(d: ReportData): string {
  const parts = d.vms.map((v) => {
    const facts = `${v.points} point${v.points === 1 ? '' : 's'}, disks ${v.disks.join(', ')}; added ${formatBytes(v.addedBytes)}, exclusive ${formatBytes(v.exclusiveBytes)}, shared ${formatBytes(v.sharedBytes)}`;
    return `<h3>${escapeHtml(v.vm)}</h3><p class="note">${escapeHtml(facts)}</p>${vmChart(v)}`;
  });
  const rows = d.disks.map((k) => {
    const last = k.logicalBytes.length - 1;
    return [k.vm, k.disk, String(k.times.length), formatBytes(k.logicalBytes[last] ?? 0), formatBytes(k.storedBytes[last] ?? 0), formatBytes(k.exclusiveBytes.reduce((a, b) => a + b, 0))];
  });
  const disks = htmlTable('Disks', ['VM', 'DISK', 'POINTS', 'SIZE', 'ADDED', 'EXCLUSIVE'], rows, [2, 3, 4, 5], [0, 1]);
  return `<section><h2>Per VM</h2>${parts.join('')}<h3>Disks</h3>${disks}</section>`;
}

function contributorsSection(d: ReportData): string {
  const points = htmlTable(
    'Points that added the most',
    ['POINT', 'VM', 'DISK', 'TIME (UTC)', 'MODE', 'ADDED', 'SHARE'],
    d.topPoints.map((p) => [p.id, p.vm, p.disk, p.time.replace('T', ' ').replace(/\.\d+Z$/, ''), p.mode, formatBytes(p.addedBytes), percent(p.share)]),
    [5, 6],
    [1, 2],
  );
  const vms = htmlTable('VMs that added the most', ['VM', 'POINTS', 'ADDED', 'SHARE'], d.topVms.map((v) => [v.vm, String(v.points), formatBytes(v.addedBytes), percent(v.share)]), [1, 2, 3], [0]);
  return `<section><h2>Largest contributors to growth</h2><p class="note">Stored bytes each backup added, largest first.</p><h3>Points</h3>${points}<h3>VMs</h3>${vms}</section>`;
}

/**
 * The whole page as one string. An empty repository renders the summary and a
 * "no points yet" notice instead of charts.
 */
export function renderReportHtml(stats: RepoStats, data: ReportData, info: PageInfo): string {
  const body =
    data.timeline.times.length === 0
      ? `<div class="empty" data-empty="true">No points yet: back up a disk, then run the report again.</div>`
      : growthSection(data) + spaceSection(data) + vmSections(data) + contributorsSection(data);
  const when = info.generatedAt.replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  return (
    `<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">` +
    `<meta name="viewport" content="width=device-width, initial-scale=1">` +
    `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">` +
    `<title>chunkvault report: ${escapeHtml(info.repo)}</title><style>${CSS}</style></head>` +
    `<body><main><header><h1>Dedup analysis</h1><p>Repository <code>${escapeHtml(info.repo)}</code> \u00b7 generated ${escapeHtml(when)}</p></header>` +
    `${cards(stats)}${body}` +
    `<footer>chunkvault report. Sizes in binary units (1 KiB = 1024 B). Figures match <code>chunkvault stats --json</code> (field <code>report</code>).</footer>` +
    `</main></body></html>\n`
  );
}
