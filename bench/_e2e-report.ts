/**
 * The end-to-end benchmark's one table and its ratios.
 *
 * Ratio rows compare each chunkvault configuration with the best peer row of the
 * same step: time ratio = chunkvault wall / best peer wall (below 1 is faster), and
 * the speed-up is its inverse. restic and borg have no separate "re-read" step (their
 * incremental already reads the whole image), so chunkvault's re-read is compared
 * with their incremental. Size ratio = chunkvault repository / smallest peer
 * repository after the same step, over all peers and over peers at a comparable
 * compression setting (zstd-1 with restic's auto, lz4 with borg lz4, zstd-3 with
 * borg zstd,3).
 */
import { bytes, printTable } from './_report.js';
import type { Row, Step } from './_e2e-tools.js';

const STEPS: readonly Step[] = ['full', 'incremental', 'reread', 'restore-day1', 'restore-day2'];
const MIB = 1024 * 1024;

export interface Ratio {
  readonly step: Step;
  readonly config: string;
  readonly wallSec: number;
  readonly bestPeer: string;
  readonly bestPeerWallSec: number;
  /** chunkvault wall / best peer wall. */
  readonly timeRatio: number;
  /** Backup steps only. */
  readonly repoBytes?: number;
  readonly smallestPeer?: string;
  readonly smallestPeerBytes?: number;
  readonly sizeRatio?: number;
  /** Against the smallest peer at a comparable compression setting, when there is one. */
  readonly comparablePeer?: string;
  readonly comparablePeerBytes?: number;
  readonly comparableSizeRatio?: number;
}

const label = (r: Row): string => `${r.tool} ${r.config}`;

/** The step a peer row must have to be compared with chunkvault's `step`. */
function peerStep(step: Step): Step {
  return step === 'reread' ? 'incremental' : step;
}

function minBy(rows: readonly Row[], key: (r: Row) => number): Row | undefined {
  let best: Row | undefined;
  for (const r of rows) if (!best || key(r) < key(best)) best = r;
  return best;
}

function sizeFields(cv: Row, peers: readonly Row[]): Partial<Ratio> {
  const small = minBy(peers, (r) => r.repoBytes);
  const comparable = minBy(
    peers.filter((r) => r.codec === cv.codec),
    (r) => r.repoBytes,
  );
  if (!small) return {};
  return {
    repoBytes: cv.repoBytes,
    smallestPeer: label(small),
    smallestPeerBytes: small.repoBytes,
    sizeRatio: cv.repoBytes / small.repoBytes,
    ...(comparable
      ? { comparablePeer: label(comparable), comparablePeerBytes: comparable.repoBytes, comparableSizeRatio: cv.repoBytes / comparable.repoBytes }
      : {}),
  };
}

/** One ratio per chunkvault row that has peer rows for the same step. */
export function ratios(rows: readonly Row[]): Ratio[] {
  const out: Ratio[] = [];
  for (const cv of rows) {
    if (cv.tool !== 'chunkvault') continue;
    const peers = rows.filter((r) => r.tool !== 'chunkvault' && r.step === peerStep(cv.step));
    const fast = minBy(peers, (r) => r.wallSec);
    if (!fast) continue;
    const backup = !cv.step.startsWith('restore');
    out.push({
      step: cv.step,
      config: cv.config,
      wallSec: cv.wallSec,
      bestPeer: label(fast),
      bestPeerWallSec: fast.wallSec,
      timeRatio: cv.wallSec / fast.wallSec,
      ...(backup ? sizeFields(cv, peers) : {}),
    });
  }
  return out;
}

const f = (n: number, d = 2): string => n.toFixed(d);

/** Prints the table: rows tool/config x step. */
export function printRows(rows: readonly Row[]): void {
  const sorted = [...rows].sort((a, b) => STEPS.indexOf(a.step) - STEPS.indexOf(b.step) || label(a).localeCompare(label(b)));
  printTable(
    ['step', 'tool', 'config', 'wall s (median [range])', 'of it sync s', 'CPU s', 'peak RSS MiB', 'MB/s', 'repo size', 'ok'],
    sorted.map((r) => [
      r.step,
      r.tool,
      r.config,
      r.wallRuns && r.wallRuns.length > 1 ? `${f(r.wallSec)} [${f(Math.min(...r.wallRuns))}-${f(Math.max(...r.wallRuns))}]` : f(r.wallSec),
      r.syncSec === undefined ? '' : f(r.syncSec),
      f(r.cpuSec),
      f(r.maxRssMiB, 0),
      f(r.mbps, 0),
      `${f(r.repoBytes / MIB, 1)} MiB`,
      r.verified === undefined ? '' : r.verified ? 'sha256 ok' : 'MISMATCH',
    ]),
  );
}

/** Prints the ratio rows. */
export function printRatios(list: readonly Ratio[]): void {
  printTable(
    ['step', 'chunkvault config', 'cv wall s', 'best peer (wall)', 'time ratio', 'speed-up', 'size ratio (smallest peer)', 'size ratio (comparable codec)'],
    list.map((r) => [
      r.step,
      r.config,
      f(r.wallSec),
      `${r.bestPeer} (${f(r.bestPeerWallSec)} s)`,
      f(r.timeRatio, 3),
      `${f(1 / r.timeRatio, 2)}x`,
      r.sizeRatio === undefined ? '' : `${f(r.sizeRatio, 3)} (${r.smallestPeer}, ${bytes(r.smallestPeerBytes ?? 0)})`,
      r.comparableSizeRatio === undefined ? '' : `${f(r.comparableSizeRatio, 3)} (${r.comparablePeer}, ${bytes(r.comparablePeerBytes ?? 0)})`,
    ]),
  );
}
