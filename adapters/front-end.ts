/**
 * The seam between hypervisor front-ends and the job runner. A front-end names the
 * disk it will back up, then (given the previous point of that disk) takes its
 * consistent view (snapshot, checkpoint, fleecing export), works out what to read, and
 * returns a `BackupPlan`. The runner always calls `finish` exactly once: that is where
 * snapshots, exports and bitmaps are released or rotated.
 */
import type { BlockSource, Extent, PointRecord } from '../engine/index.js';

/** What one disk's backup reads, and how the engine fills the rest. */
export interface BackupPlan {
  readonly source: BlockSource;
  /** Extents to read; undefined reads the whole disk. */
  readonly changed?: readonly Extent[];
  /** Unread slots: the parent's (incremental) or zero (full backup of allocated data). */
  readonly base: 'parent' | 'zero';
  /** Token the next incremental starts from (bitmap name, changeId, ...). */
  readonly changeToken: string | null;
  /** Facts worth keeping with the point (e.g. why a full read was forced). */
  readonly meta?: Record<string, unknown>;
  /**
   * Called once after the backup: `committed` is true when the point was committed.
   * Must release everything the front-end made (snapshots, exports, temporary bitmaps)
   * and must not throw for cleanup problems it can report otherwise.
   */
  finish(committed: boolean): Promise<void>;
}

export interface PlanContext {
  /** The latest committed point of this vm and disk, if any. */
  readonly parent: PointRecord | null;
  /** Read everything even when change tracking could narrow it. */
  readonly forceFull: boolean;
  readonly signal?: AbortSignal;
}

/** One disk source named on the command line. */
export interface FrontEnd {
  /** Default disk name (the user may override it). */
  readonly diskName: string;
  /** Takes the consistent view and plans the backup. */
  plan(ctx: PlanContext): Promise<BackupPlan>;
}
