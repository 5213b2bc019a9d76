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

/** One disk of a VM plan: its name and its plan. */
export interface VmDiskPlan {
  readonly disk: string;
  readonly plan: BackupPlan;
}

/** What one backup of a whole VM reads: every disk from one consistent view. */
export interface VmBackupPlan {
  readonly disks: readonly VmDiskPlan[];
  /** The VM's configuration, stored with the VM record (opaque to the engine). */
  readonly config?: unknown;
  readonly meta?: Record<string, unknown>;
  /**
   * Called once after every disk's `finish`: `committed` is true when the VM record was
   * committed. Releases the VM-level snapshot or checkpoint, also after a failure.
   */
  finish(committed: boolean): Promise<void>;
}

export interface VmPlanContext {
  /** The latest committed point of a disk of this VM, if any. */
  parentOf(disk: string): Promise<PointRecord | null>;
  readonly forceFull: boolean;
  readonly signal?: AbortSignal;
}

/**
 * A VM whose disks are backed up together (VMware, XenServer, Hyper-V, several images).
 * `plan` takes the VM-level consistent view and plans each disk; if it throws, it must
 * have released what it made.
 */
export interface VmFrontEnd {
  /** Default VM name (the user may override it). */
  readonly vmName: string;
  plan(ctx: VmPlanContext): Promise<VmBackupPlan>;
}
