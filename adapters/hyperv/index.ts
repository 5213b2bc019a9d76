/**
 * Hyper-V data path: VHDX and VHD readers (fixed, dynamic, differencing) and disk
 * chains as engine `BlockSource`s. Everything else in this folder is internal.
 */
export { DEFAULT_MAX_CHAIN_DEPTH, DiskChain, detectFormat, openVhd, openVhdx, openVirtualDisk } from './disk-chain.js';
export type { ChainOptions, DiskLayer } from './disk-chain.js';
export { VhdxReader } from './vhdx.js';
export { VhdReader } from './vhd.js';
