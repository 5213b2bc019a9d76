/**
 * `chunkvault report` end to end: a repository of two VMs built with the CLI, whose
 * exclusive and shared space is known by construction, written as an HTML page that
 * is then opened in headless Debian Chromium (playwright-core). The page must render
 * without console or page errors and without any request besides itself, and every
 * chart must plot the figures `stats --json` prints. A screenshot is kept in
 * `test-artifacts/report.png`.
 *
 * Without /usr/bin/chromium the browser part fails under CI (`CI=true`) and is
 * skipped elsewhere, with the command that installs it.
 */
import { existsSync, promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backupOk, checkRepo, cliFails, cliOk, ensureBuilt, initRepo, KiB, makeTempDir, MiB, removeTempDir, ROOT, seededBytes, type BackupJson } from '../helpers/cli.js';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const ARTIFACT = join(ROOT, 'test-artifacts', 'report.png');
const CHUNK = 256 * KiB;
const RECORD_HEADER_BYTES = 64; // FORMAT.md "Record"

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

let dir: string;
let repo: string;
let html: string;
const backups = new Map<string, BackupJson>();
let stats: Json;
let reportJson: Json;

/** 4 MiB of seeded random bytes (16 incompressible chunks), then 2 MiB of zeros. */
async function writeGolden(path: string): Promise<void> {
  await fsp.writeFile(path, Buffer.concat([seededBytes('golden', 4 * MiB), Buffer.alloc(2 * MiB)]));
}

async function overwrite(path: string, offset: number, length: number, seed: string): Promise<void> {
  const fh = await fsp.open(path, 'r+');
  try {
    await fh.write(seededBytes(seed, length), 0, length, offset);
  } finally {
    await fh.close();
  }
}

/**
 * alpha-1 and beta-1 hold the same 16 chunks (beta is a clone: it adds nothing), so
 * both VMs share those 16. alpha-2 rewrites the first 1 MiB: 4 chunks only alpha
 * references (exclusive to alpha). beta-2 rewrites 512 KiB at 2 MiB: 2 new chunks,
 * also held by beta-3 (unchanged): exclusive to beta (no other VM references them).
 */
async function buildRepository(): Promise<void> {
  const alpha = join(dir, 'alpha.img');
  const beta = join(dir, 'beta.img');
  await initRepo(repo, ['--chunk-size', '256K']);
  await writeGolden(alpha);
  await fsp.copyFile(alpha, beta);
  const step = async (name: string, image: string, vm: string) => backups.set(name, await backupOk(repo, image, vm, ['--disk', 'root']));
  await step('alpha-1', alpha, 'alpha');
  await step('beta-1', beta, 'beta');
  await overwrite(alpha, 0, MiB, 'alpha-day-2');
  await step('alpha-2', alpha, 'alpha');
  await overwrite(beta, 2 * MiB, 512 * KiB, 'beta-day-2');
  await step('beta-2', beta, 'beta');
  await step('beta-3', beta, 'beta');
}

beforeAll(async () => {
  ensureBuilt();
  dir = await makeTempDir('report');
  repo = join(dir, 'repo');
  html = join(dir, 'out', 'report.html');
  await fsp.mkdir(join(dir, 'out'));
  await buildRepository();
  stats = (await cliOk(['stats', '--repo', repo, '--json'])).json;
  const r = await cliOk(['report', '--repo', repo, '--html', html, '--json']);
  reportJson = r.json;
});

afterAll(async () => {
  await removeTempDir(dir);
});

describe('report data (stats --json and report --json)', () => {
  it('writes the page and prints where, with the same figures as stats --json', async () => {
    const size = (await fsp.stat(html)).size;
    expect(reportJson).toMatchObject({ html, bytes: size, points: 5, vms: 2 });
    expect(reportJson.report).toEqual(stats.report);
    expect((await fsp.readdir(join(dir, 'out'))).sort()).toEqual(['report.html']);
    const text = await cliOk(['report', '--repo', repo, '--html', html]);
    expect(text.stdout).toMatch(new RegExp(`^report written to ${html.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(\\d+(\\.\\d+)? KiB, 5 points, 2 VMs\\)\\n$`));
  });

  it('accounts exclusive and shared space per VM as built', () => {
    const byVm = new Map<string, Json>(stats.report.vms.map((v: Json) => [v.vm, v]));
    const added = (...names: string[]) => names.reduce((a, n) => a + backups.get(n)!.bytesNew, 0);
    expect(backups.get('beta-1')!.bytesNew).toBe(0);
    expect(byVm.get('alpha')).toMatchObject({ points: 2, disks: ['root'], addedBytes: added('alpha-1', 'alpha-2'), exclusiveBytes: 4 * CHUNK, sharedBytes: 16 * CHUNK });
    expect(byVm.get('beta')).toMatchObject({ points: 3, disks: ['root'], addedBytes: added('beta-2'), exclusiveBytes: 2 * CHUNK, sharedBytes: 16 * CHUNK });
    expect(byVm.get('beta')!.storedBytes).toEqual([0, added('beta-2'), added('beta-2')]);
    expect(byVm.get('alpha')!.logicalBytes).toEqual([6 * MiB, 6 * MiB]);
    expect(stats.report.topPoints[0]).toMatchObject({ id: backups.get('alpha-1')!.point, addedBytes: 16 * CHUNK + 16 * RECORD_HEADER_BYTES });
    expect(stats.report.topVms.map((v: Json) => v.vm)).toEqual(['alpha', 'beta']);
  });

  it('ends the trends on the whole-repository figures', () => {
    const t = stats.report.timeline;
    expect(t.pointIds).toEqual(['alpha-1', 'beta-1', 'alpha-2', 'beta-2', 'beta-3'].map((n) => backups.get(n)!.point));
    expect(t.logicalBytes.at(-1)).toBe(stats.logicalBytes);
    expect(t.rawBytes.at(-1)).toBe(stats.uniqueRawBytes);
    expect(t.dedupRatio.at(-1)).toBe(stats.dedupRatio);
    expect(t.compressionRatio.at(-1)).toBe(stats.compressionRatio);
    // Two identical 4 MiB images, then 1 + 0.5 MiB changed: dedup grows with every point.
    expect(t.dedupRatio[0]).toBe(1);
    expect(t.dedupRatio[1]).toBe(2);
  });

  it('renders an empty repository, and reports usage and output errors', async () => {
    const empty = join(dir, 'empty-repo');
    await initRepo(empty);
    const page = join(dir, 'empty.html');
    await cliOk(['report', '--repo', empty, '--html', page]);
    expect(await fsp.readFile(page, 'utf8')).toContain('No points yet');
    await cliFails(['report', '--repo', empty, '--json'], 'USAGE');
    await cliFails(['report', '--repo', empty, '--html', join(dir, 'no-such-dir', 'r.html'), '--json'], 'OUTPUT_FAILED');
    const help = (await cliOk(['report', '--help'])).stdout;
    expect(help).toMatch(/^Usage: chunkvault report/);
    for (const flag of ['--repo', '--html <file>', '--json']) expect(help).toContain(flag);
    expect((await cliOk(['--help'])).stdout).toContain('report');
    await checkRepo(repo);
  });
});

interface ChartDom {
  name: string;
  width: number;
  height: number;
  series: { name: string; values: number[] }[];
}

/** Runs in the page: every chart's name, rendered size and plotted series. */
const READ_CHARTS = `[...document.querySelectorAll('svg[data-chart]')].map((svg) => {
  const box = svg.getBoundingClientRect();
  return {
    name: svg.getAttribute('data-chart'),
    width: box.width,
    height: box.height,
    series: [...svg.querySelectorAll('[data-series]')].map((e) => ({ name: e.getAttribute('data-series'), values: JSON.parse(e.getAttribute('data-values')) })),
  };
})`;

/** The charts the page must hold, from `stats --json`. */
function expectedCharts(report: Json): Map<string, Record<string, number[]>> {
  const t = report.timeline;
  const space = [...report.vms].sort((a: Json, b: Json) => b.exclusiveBytes + b.sharedBytes - (a.exclusiveBytes + a.sharedBytes));
  const charts = new Map<string, Record<string, number[]>>([
    ['repo-size', { logical: t.logicalBytes, stored: t.storedBytes }],
    ['ratios', { dedup: t.dedupRatio, compression: t.compressionRatio }],
    ['vm-space', { exclusive: space.map((v: Json) => v.exclusiveBytes), shared: space.map((v: Json) => v.sharedBytes) }],
  ]);
  for (const v of report.vms) charts.set(`vm-size:${v.vm}`, { logical: v.logicalBytes, stored: v.storedBytes });
  return charts;
}

function describeWithChromium(title: string, body: () => void): void {
  if (existsSync(CHROMIUM)) describe(title, body);
  else if (process.env['CI'] === 'true') {
    describe(title, () => {
      it('has Debian chromium', () => {
        throw new Error(`${CHROMIUM} is missing (apt-get install -y --no-install-recommends chromium)`);
      });
    });
  } else {
    console.warn(`skipping "${title}": ${CHROMIUM} is missing (apt-get install -y --no-install-recommends chromium)`);
    describe.skip(title, body);
  }
}

describeWithChromium('report page in headless Chromium', () => {
  let browser: Browser;

  beforeAll(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  });

  afterAll(async () => {
    await browser?.close();
  });

  it('renders without errors or requests, and its charts hold the stats series', async () => {
    const page = await browser.newPage({ viewport: { width: 900, height: 900 } });
    const problems: string[] = [];
    const requests: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('request', (r) => requests.push(r.url()));
    const url = pathToFileURL(html).href;
    await page.goto(url, { waitUntil: 'load' });

    const charts = await page.evaluate<ChartDom[]>(READ_CHARTS);
    const expected = expectedCharts(stats.report);
    expect(charts.map((c) => c.name).sort()).toEqual([...expected.keys()].sort());
    for (const c of charts) {
      expect(Object.fromEntries(c.series.map((s) => [s.name, s.values])), `series of chart ${c.name}`).toEqual(expected.get(c.name));
      expect(c.width, `width of chart ${c.name}`).toBeGreaterThan(300);
      expect(c.height, `height of chart ${c.name}`).toBeGreaterThan(100);
    }
    expect(await page.title()).toContain('chunkvault report');
    expect(await page.locator('text=No points yet').count()).toBe(0);

    await fsp.mkdir(join(ROOT, 'test-artifacts'), { recursive: true });
    await page.screenshot({ path: ARTIFACT, fullPage: true });
    expect((await fsp.stat(ARTIFACT)).size).toBeGreaterThan(10_000);
    expect(problems).toEqual([]);
    expect(requests).toEqual([url]);
    await page.close();
  });
});
