/**
 * Hyper-V data path: VHDX and VHD readers (fixed, dynamic, differencing) and disk
 * chains as engine `BlockSource`s. Everything else in this folder is internal.
 */
export { DEFAULT_MAX_CHAIN_DEPTH, DiskChain, detectFormat, openVhd, openVhdx, openVirtualDisk } from './disk-chain.js';
export type { ChainOptions, DiskLayer } from './disk-chain.js';
export { VhdxReader } from './vhdx.js';
export { VhdReader } from './vhd.js';

/*
 * The Hyper-V VM front-end (`hyperv://USER@HOST/VM`): recovery checkpoints and RCT over
 * WS-Management (see front-end.ts for the run's life cycle). Error codes callers may
 * see (all `ChunkvaultError`), besides the readers':
 * - INVALID_ARGUMENT: a malformed source URI, no password, two VMs with the name, a
 *   disk path no `map=` covers.
 * - SOURCE_NOT_FOUND: no such VM, a VM without virtual hard disks, no Hyper-V services.
 * - CONNECT_FAILED: WinRM unreachable, the connection dropped, or HTTP 401.
 * - REMOTE_ERROR: a WS-Man fault (`details.wsmanFault`, `wsmanCode`), a WMI method's
 *   return value (`details.returnValue`) or a job that failed (`details.jobState`).
 * - TIMEOUT, PROTOCOL_ERROR: no answer in time, or an answer that is not WS-Man.
 * An RCT id the host no longer knows is not an error: the disk is read in full and the
 * point records why in `meta.fullReason`.
 */
export { HypervVmFrontEnd, CONSISTENCY_LEVEL, RECOVERY_SNAPSHOT, diskNameOf, type HypervVmFrontEndOptions } from './front-end.js';
export { HYPERV_PASSWORD_ENV, isHypervSource, mapHostPath, parseHypervSource, type HypervSource, type PathMapping } from './source.js';
export { WsmanClient, VIRTUALIZATION_V2, JOB_STATE, RETURN_VALUE, classUri, embeddedInstance, eprXml, parseEpr, parseInstance, type CimInstance, type CimValue, type Epr, type MethodArg, type WsmanOptions } from './wsman.js';
export { authenticateMessage, md4, negotiateMessage, ntlmv2Response, ntowfv2, parseAuthenticate, parseChallenge, type Challenge } from './ntlm.js';
