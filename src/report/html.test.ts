import { describe, expect, it } from 'vitest';
import type { RepoStats } from '../../engine/index.js';
import { MAX_BAR_VMS, renderReportHtml } from './html.js';
import type { ReportData, VmSeries } from './model.js';
import { barChart, escapeHtml, formatTime, lineChart, timeTicks, valueTicks } from './svg.js';

const MiB = 1024 * 1024;
const HOSTILE_VM = '<script>alert(1)</script>';
const HOSTILE_DISK = `"><img src=x onerror='alert(2)'>&amp;`;

function unescape(text: string): string {
  return text.replace(/&(lt|gt|quot|#39|amp);/g, (_m, e: string) => ({ lt: '<', gt: '>', quot: '"', '#39': "'", amp: '&' })[e]!);
}

/** chart name -> series name -> values, read back from the markup. */
function chartsOf(html: string): Map<string, Map<string, unknown>> {
  const charts = new Map<string, Map<string, unknown>>();
  for (const svg of html.split('<svg ').slice(1)) {
    const name = unescape(/^data-chart="([^"]*)"/.exec(svg)![1]!);
    const series = new Map<string, unknown>();
    for (const m of svg.split('</svg>')[0]!.matchAll(/data-series="([^"]*)" data-values="([^"]*)"/g)) series.set(unescape(m[1]!), JSON.parse(unescape(m[2]!)));
    charts.set(name, series);
  }
  return charts;
}

const STATS: RepoStats = {
  points: 2,
  vms: 2,
  logicalBytes: 16 * MiB,
  zeroBytes: 0,
  uniqueChunks: 8,
  uniqueRawBytes: 8 * MiB,
  storedPayloadBytes: 4 * MiB,
  storedBytes: 4 * MiB + 1024,
  containers: 1,
  dedupRatio: 2,
  compressionRatio: 2,
  totalRatio: 3.99,
  perPoint: [],
  perVm: [],
};

function vm(name: string, time: string, exclusive: number, shared: number): VmSeries {
  return { vm: name, disks: [HOSTILE_DISK], points: 1, times: [time], logicalBytes: [8 * MiB], storedBytes: [exclusive + shared], addedBytes: exclusive + shared, exclusiveBytes: exclusive, sharedBytes: shared };
}

const DATA: ReportData = {
  timeline: {
    times: ['2026-03-01T10:00:00.000Z', '2026-03-04T10:00:00.000Z'],
    pointIds: ['0000000000000001', '0000000000000002'],
    logicalBytes: [8 * MiB, 16 * MiB],
    storedBytes: [4 * MiB, 4 * MiB + 1024],
    rawBytes: [8 * MiB, 8 * MiB],
    dedupRatio: [1, 2],
    compressionRatio: [2, 1.9990234375],
  },
  vms: [vm('plain-vm', '2026-03-01T10:00:00.000Z', 3 * MiB, MiB), vm(HOSTILE_VM, '2026-03-04T10:00:00.000Z', 1024, 0)],
  disks: [
    { vm: 'plain-vm', disk: HOSTILE_DISK, times: ['2026-03-01T10:00:00.000Z'], pointIds: ['0000000000000001'], logicalBytes: [8 * MiB], addedBytes: [4 * MiB], storedBytes: [4 * MiB], exclusiveBytes: [3 * MiB] },
  ],
  topPoints: [{ id: '0000000000000001', vm: HOSTILE_VM, disk: HOSTILE_DISK, time: '2026-03-01T10:00:00.000Z', mode: 'full', addedBytes: 4 * MiB, share: 0.999 }],
  topVms: [{ vm: HOSTILE_VM, points: 1, addedBytes: 1024, share: 0.001 }],
};

describe('renderReportHtml', () => {
  const html = renderReportHtml(STATS, DATA, { repo: '/srv/<repo>', generatedAt: '2026-03-05T00:00:00.000Z' });

  it('escapes every name: no markup from the repository gets through', () => {
    expect(html).not.toMatch(/<script/i);
    expect(html).not.toMatch(/<img/i);
    expect(html).not.toContain("onerror='");
    expect(html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
    expect(html).toContain('&quot;&gt;&lt;img src=x onerror=&#39;alert(2)&#39;&gt;&amp;amp;');
    expect(html).toContain('/srv/&lt;repo&gt;');
  });

  it('is self-contained: no script, no external reference', () => {
    expect(html).not.toMatch(/https?:\/\//);
    expect(html).not.toMatch(/<[^>]*\s(src|href)=/i);
    expect(html).not.toMatch(/@import|url\(/);
    expect(html.startsWith('<!DOCTYPE html>')).toBe(true);
  });

  it('plots the series of the data model, readable back from data-values', () => {
    const charts = chartsOf(html);
    expect([...charts.keys()]).toEqual(['repo-size', 'ratios', 'vm-space', 'vm-size:plain-vm', `vm-size:${HOSTILE_VM}`]);
    expect(charts.get('repo-size')).toEqual(new Map([['logical', DATA.timeline.logicalBytes], ['stored', DATA.timeline.storedBytes]]));
    expect(charts.get('ratios')).toEqual(new Map([['dedup', [1, 2]], ['compression', [2, 1.9990234375]]]));
    expect(charts.get('vm-space')).toEqual(new Map([['exclusive', [3 * MiB, 1024]], ['shared', [MiB, 0]]]));
    expect(charts.get(`vm-size:${HOSTILE_VM}`)).toEqual(new Map([['logical', [8 * MiB]], ['stored', [1024]]]));
  });

  it('gives every chart an accessible title and description', () => {
    const svgs = html.match(/<svg [^>]*>/g)!;
    expect(svgs).toHaveLength(5);
    for (const s of svgs) expect(s).toMatch(/role="img" aria-labelledby="(chart-[0-9a-z]+)-t \1-d"/);
    expect(html.match(/<title id="chart-[0-9a-z]+-t">/g)).toHaveLength(5);
    const ids = svgs.map((s) => /aria-labelledby="(chart-[0-9a-z]+)-t/.exec(s)![1]);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('is deterministic: the same figures give the same page', () => {
    expect(renderReportHtml(STATS, DATA, { repo: '/srv/<repo>', generatedAt: '2026-03-05T00:00:00.000Z' })).toBe(html);
  });

  it('labels axes with human-readable sizes and ratios', () => {
    expect(html).toContain('>20.0 MiB</text>');
    expect(html).toContain('>2x</text>');
    expect(html).toContain('>2026-03-02</text>');
    expect(html).toContain('>time (UTC)</text>');
  });

  it('renders an empty repository with a notice and no chart', () => {
    const empty: ReportData = { timeline: { times: [], pointIds: [], logicalBytes: [], storedBytes: [], rawBytes: [], dedupRatio: [], compressionRatio: [] }, vms: [], disks: [], topPoints: [], topVms: [] };
    const page = renderReportHtml({ ...STATS, points: 0, vms: 0 }, empty, { repo: 'r', generatedAt: '2026-03-05T00:00:00.000Z' });
    expect(page).toContain('No points yet');
    expect(page).not.toContain('<svg');
  });

  it(`shows at most ${MAX_BAR_VMS} VMs in the space chart, the largest`, () => {
    const many = Array.from({ length: MAX_BAR_VMS + 5 }, (_, i) => vm(`vm-${String(i).padStart(2, '0')}`, '2026-03-01T10:00:00.000Z', i * MiB, 0));
    const charts = chartsOf(renderReportHtml(STATS, { ...DATA, vms: many }, { repo: 'r', generatedAt: '2026-03-05T00:00:00.000Z' }));
    const exclusive = charts.get('vm-space')!.get('exclusive') as number[];
    expect(exclusive).toHaveLength(MAX_BAR_VMS);
    expect(exclusive[0]).toBe((MAX_BAR_VMS + 4) * MiB);
  });
});

describe('svg primitives', () => {
  it('escapes the five HTML-special characters', () => {
    expect(escapeHtml(`<a href="x">'&'</a>`)).toBe('&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;');
  });

  it('chooses value ticks from 0 to at least the maximum, in nice steps of a binary unit', () => {
    expect(valueTicks(16 * MiB, 'bytes')).toEqual([0, 5, 10, 15, 20].map((v) => v * MiB));
    expect(valueTicks(3 * MiB + 1, 'bytes')).toEqual([0, 1, 2, 3, 4].map((v) => v * MiB));
    expect(valueTicks(1.5 * MiB, 'bytes')).toEqual([0, 0.5, 1, 1.5].map((v) => v * MiB));
    expect(valueTicks(0, 'bytes')).toEqual([0, 256, 512, 768, 1024]);
    expect(valueTicks(2, 'ratio')).toEqual([0, 0.5, 1, 1.5, 2]);
    expect(valueTicks(0, 'ratio')).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
  });

  it('puts time ticks on round UTC steps, labelled as precisely as the step needs', () => {
    const day = 86_400_000;
    const t0 = Date.parse('2026-03-01T10:20:30.000Z');
    expect(timeTicks(t0, t0 + 3 * day).map((t) => t.label)).toEqual(['2026-03-02', '2026-03-03', '2026-03-04']);
    expect(timeTicks(t0, t0 + 4 * 3_600_000).map((t) => t.label)).toEqual(['11:00', '12:00', '13:00', '14:00']);
    expect(timeTicks(t0, t0 + 2 * day).map((t) => t.label)).toEqual(['03-01 12:00', '03-02 00:00', '03-02 12:00', '03-03 00:00']);
    expect(timeTicks(t0, t0 + 4_000).map((t) => t.label)).toEqual(['10:20:30', '10:20:31', '10:20:32', '10:20:33', '10:20:34']);
    expect(timeTicks(t0 + 100, t0 + 450)).toEqual([
      { ms: t0 + 100, label: '10:20:30.100' },
      { ms: t0 + 450, label: '10:20:30.450' },
    ]);
    expect(timeTicks(t0, t0)).toEqual([{ ms: t0, label: '10:20:30' }]);
    expect(formatTime(t0, day)).toBe('2026-03-01');
  });

  it('draws a single sample in the middle, and empty series without failing', () => {
    const one = lineChart({ name: 'one', title: 't', description: 'd', kind: 'bytes', series: [{ name: 's', label: 's', color: '#000', times: ['2026-03-01T00:00:00.000Z'], values: [5] }] });
    expect(one).toContain('d="M409 ');
    const none = lineChart({ name: 'none', title: 't', description: 'd', kind: 'ratio', series: [{ name: 's', label: 's', color: '#000', times: [], values: [] }] });
    expect(none).toContain('data-series="s" data-values="[]"');
    const bars = barChart({ name: 'b', title: 't', description: 'd', kind: 'bytes', groups: [], series: [{ name: 's', label: 's', color: '#000', values: [] }] });
    expect(bars).toContain('data-chart="b"');
  });
});
