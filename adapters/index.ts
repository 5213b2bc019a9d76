/**
 * Hypervisor front-ends and transports. Each yields `BlockSource`s for the engine.
 * schemes.ts is the folder's light entry point: it tells which front-end a source
 * argument names without loading any of them (the CLI then imports only that one).
 */
export * from './file/index.js';
export * from './nbd/index.js';
export type { BackupPlan, FrontEnd, PlanContext, VmBackupPlan, VmDiskPlan, VmFrontEnd, VmPlanContext } from './front-end.js';
export * from './kvm/index.js';
export { ComposedVm } from './composed-vm.js';
export * from './xen/index.js';
export * from './hyperv/index.js';
export * from './vmware/index.js';
