/**
 * Hypervisor front-ends and transports. Each yields `BlockSource`s for the engine.
 */
export * from './file/index.js';
export * from './nbd/index.js';
export type { BackupPlan, FrontEnd, PlanContext, VmBackupPlan, VmDiskPlan, VmFrontEnd, VmPlanContext } from './front-end.js';
export * from './kvm/index.js';
export { ComposedVm } from './composed-vm.js';
export * from './xen/index.js';
export * from './hyperv/index.js';
export * from './vmware/index.js';
