/**
 * The VMware vSphere front-end (`vmware://USER@HOST/PATH/TO/VM`): a VM's disks backed
 * up with changed block tracking (QueryChangedDiskAreas) from one VM snapshot, read
 * over /folder Range requests, an NBD server or a local (SAN) path. See front-end.ts
 * for the snapshot life cycle; everything not exported here is internal.
 *
 * The SOAP client is our own rather than the `soap` package: vSphere needs about a
 * dozen calls, `soap` would fetch and compile the ~6 MB vim25 WSDL at start-up, adds a
 * large dependency tree, and hides faults and the session cookie we map and reuse.
 *
 * Error codes callers may see (all `ChunkvaultError`), besides the NBD client's:
 * - INVALID_ARGUMENT: a malformed source URI, no password, two VMs with the name.
 * - SOURCE_NOT_FOUND: no such VM, a VM without disks, no transport could open a disk.
 * - CONNECT_FAILED: the host cannot be reached, the login was refused (`faultType`
 *   InvalidLogin), or a /folder read lost its connection twice.
 * - REMOTE_ERROR: a call or task failed (`details: {faultType, method}`).
 * - TIMEOUT, PROTOCOL_ERROR, TLS_FAILED: no answer, not a SOAP answer, certificate.
 * - SOURCE_READ_FAILED: /folder refused a range read or stayed busy (503).
 */
export { VmwareVmFrontEnd, changedAreas, disksOf, splitDatastorePath, type VmwareDisk, type VmwareVmFrontEndOptions } from './front-end.js';
export { isVmwareSource, parseVmwareSource, VMWARE_PASSWORD_ENV, VMWARE_PASSWORD_FILE_ENV, type VmwareSource, type VmwareTransport } from './source.js';
export { VimClient, faultError, faultType, moXml, SESSION_COOKIE, toMoRef, type MoRef, type ServiceContent, type VimEndpoint, type VimLogin } from './soap.js';
export { FolderDiskSource, type FolderDiskOptions } from './http-source.js';
