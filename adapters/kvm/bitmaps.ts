/**
 * The dirty-bitmap life cycle shared by both KVM front-ends (images at rest and
 * running VMs): naming, and deciding from the parent point and the bitmaps present
 * what one backup does. The steps themselves (qemu-img or QMP) live in the front-ends.
 *
 * Terms:
 * - ours: a bitmap whose name starts with `cv-`. chunkvault creates, disables, merges
 *   and removes only these; other bitmaps (a user's, another tool's) are never touched.
 * - B_old: the bitmap named by the parent point's `changeToken`; it has recorded every
 *   write since the parent's point in time.
 * - B_new: the bitmap this backup adds; it becomes the new point's `changeToken`.
 * - leftover: any other bitmap of ours. It exists only when an earlier run died
 *   between rotating bitmaps and finishing (host crash, SIGKILL), and may hold writes
 *   B_old lacks, so an incremental first merges leftovers into B_old ("absorb").
 *
 * Life cycle of one backup (both front-ends, in this order):
 *
 *   incremental:  absorb leftovers -> add B_new -> disable B_old -> read dirty(B_old)
 *                 committed: remove B_old        (B_new is the next B_old)
 *                 failed:    enable B_old, merge B_new into B_old, remove B_new
 *   full:         add B_new -> read allocated data (a usable B_old is left as it is)
 *                 committed: remove B_old and leftovers
 *                 failed:    as a failed incremental when B_old is usable, else remove B_new
 *
 * Why a failed incremental merges into B_old rather than into B_new: the parent
 * point's changeToken names B_old and is what the next run starts from; keeping that
 * name valid (holding every write since the parent) keeps the next run incremental.
 * Merging into B_new would lose nothing either, but the next run would find no bitmap
 * by the parent's token and fall back to a full read. Every step is safe to interrupt:
 * the next run's absorb step folds whatever bitmap of ours is left into B_old.
 */
import { randomBytes } from 'node:crypto';
import type { PointRecord } from '../../engine/index.js';

export const BITMAP_PREFIX = 'cv-';

/** A bitmap as seen on the image or the node. */
export interface BitmapView {
  readonly name: string;
  /** Its content cannot be trusted (qcow2 `in-use` after a crash, QMP `inconsistent`). */
  readonly inconsistent: boolean;
  /** Recording writes (qcow2 flag `auto`, QMP `recording`). */
  readonly enabled: boolean;
}

export type BitmapDecision =
  | { readonly kind: 'incremental'; readonly old: string; readonly absorb: readonly string[] }
  /** `old`: the parent's bitmap when it is present and consistent; `stale`: every other bitmap of ours. */
  | { readonly kind: 'full'; readonly reason: string; readonly old: string | null; readonly stale: readonly string[] };

/** A new bitmap name: `cv-` + UTC time to the second + 4 random hex digits (sortable, unique). */
export function newBitmapName(now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return `${BITMAP_PREFIX}${stamp}-${randomBytes(2).toString('hex')}`;
}

export function isOurs(name: string): boolean {
  return name.startsWith(BITMAP_PREFIX);
}

/**
 * What this backup does, from the parent point and the bitmaps present. A full read
 * always says why (`reason`, kept in the point's meta as `fullReason`).
 */
export function decide(parent: PointRecord | null, forceFull: boolean, bitmaps: readonly BitmapView[]): BitmapDecision {
  const ours = bitmaps.filter((b) => isOurs(b.name)).map((b) => b.name);
  const token = parent?.changeToken ?? null;
  const found = token !== null && isOurs(token) ? bitmaps.find((b) => b.name === token) : undefined;
  const usable = found && !found.inconsistent ? found.name : null;
  const full = (reason: string): BitmapDecision => ({ kind: 'full', reason, old: usable, stale: ours.filter((n) => n !== usable) });
  if (!parent) return full('first backup of this disk');
  if (forceFull) return full('full backup requested');
  if (token === null || !isOurs(token)) return full(`the parent point ${parent.id} has no chunkvault bitmap`);
  if (!found) return full(`bitmap ${token} of the parent point is not in the image`);
  if (found.inconsistent) return full(`bitmap ${token} is inconsistent (in-use: the image was not closed cleanly)`);
  // A leftover that cannot be trusted may hold writes B_old lacks: only a full read is safe.
  const broken = bitmaps.find((b) => isOurs(b.name) && b.name !== token && b.inconsistent);
  if (broken) return full(`leftover bitmap ${broken.name} is inconsistent, so the changes since the parent point are unknown`);
  const absorb = ours.filter((n) => n !== token);
  // A disabled B_old is complete only together with the B_new added before it was
  // disabled (a killed run); with no such leftover, writes since then went unrecorded.
  if (!found.enabled && absorb.length === 0) return full(`bitmap ${token} was disabled and no other bitmap of ours recorded the writes since`);
  return { kind: 'incremental', old: token, absorb };
}

/** The bitmap a failed backup merges B_new back into (null: just remove B_new). */
export function restoreOnFailure(d: BitmapDecision): string | null {
  return d.old;
}

/** Bitmaps of ours to remove after a committed backup. */
export function removeOnCommit(d: BitmapDecision): string[] {
  if (d.kind === 'incremental') return [d.old];
  return [...(d.old ? [d.old] : []), ...d.stale];
}
