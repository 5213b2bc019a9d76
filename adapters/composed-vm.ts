/**
 * A VM made of several single-disk front-ends (e.g. raw images or block devices named
 * on the command line), backed up as one job. Disks are planned one after another;
 * when a later one fails, the earlier plans are finished (not committed) and closed.
 */
import type { FrontEnd, VmBackupPlan, VmDiskPlan, VmFrontEnd, VmPlanContext } from './front-end.js';

export class ComposedVm implements VmFrontEnd {
  constructor(
    readonly vmName: string,
    private readonly disks: readonly FrontEnd[],
  ) {}

  async plan(ctx: VmPlanContext): Promise<VmBackupPlan> {
    const planned: VmDiskPlan[] = [];
    try {
      for (const fe of this.disks) {
        const parent = await ctx.parentOf(fe.diskName);
        planned.push({ disk: fe.diskName, plan: await fe.plan({ parent, forceFull: ctx.forceFull, ...(ctx.signal ? { signal: ctx.signal } : {}) }) });
      }
    } catch (err) {
      for (const { plan } of planned) {
        await plan.finish(false).catch(() => undefined);
        await plan.source.close().catch(() => undefined);
      }
      throw err;
    }
    return { disks: planned, finish: async () => undefined };
  }
}
