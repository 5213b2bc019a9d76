/**
 * The list of source forms that `backup --help` and `estimate --help` print after their
 * options (README "Sources" has the long form). One place, so the two never disagree.
 */
export const SOURCES_HELP = `
Sources:
  /path/disk.img, /dev/sdX       a raw image or block device (SAN / hot-add);
                                 incremental with --changed-extents FILE
  disk.vhdx, disk.vhd, .avhdx,   the virtual disk inside a VHDX / VHD file, with
  vhdx:PATH, vhd:PATH            its differencing chain; --changed-extents FILE
  nbd://HOST[:PORT]/EXPORT,      any NBD export (nbds:// for TLS, ?tls-ca=FILE or
  nbd+unix:///EXPORT?socket=P    ?tls-pin=sha256:HEX); incremental with --bitmap
  kvm:/path/disk.qcow2           a qcow2 image at rest, through qemu-nbd
  kvm+qmp:QMP_SOCKET?node=NODE   a disk of a running QEMU VM (&nbd=SOCKET,
                                 &fleece-dir=DIR); kvm sources keep their own dirty
                                 bitmaps (cv-*) and are incremental by themselves
  Whole VMs (every disk from one snapshot, the hypervisor's change tracking, --vm
  defaults to the VM in the URI):
  vmware://USER@HOST[:PORT]/path/to/vm[?transport=san,nbd,http]
                                 vSphere CBT; $CHUNKVAULT_VMWARE_PASSWORD (or
                                 $CHUNKVAULT_VMWARE_PASSWORD_FILE)
  hyperv://USER@HOST[:PORT]/VM?map=C:\\VMs=/mnt/vms
                                 Hyper-V RCT over WinRM; $CHUNKVAULT_HYPERV_PASSWORD
  xen://USER@POOL_MASTER[:PORT]/VM (xens:// for https, ?ca=FILE)
                                 XenAPI CBT; $CHUNKVAULT_XEN_PASSWORD
Several sources are the disks of one VM, committed together as one VM backup (a
point per disk).`;
