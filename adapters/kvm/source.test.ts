import { describe, expect, it } from 'vitest';
import { isChunkvaultError } from '../../engine/index.js';
import { KvmImageFrontEnd } from './at-rest.js';
import { KvmQmpFrontEnd } from './live.js';
import { isKvmSource, kvmFrontEnd } from './source.js';

function code(fn: () => unknown): string | null {
  try {
    fn();
    return null;
  } catch (err) {
    return isChunkvaultError(err) ? err.code : 'not a ChunkvaultError';
  }
}

describe('kvm source arguments', () => {
  it('recognises kvm: and kvm+qmp: only', () => {
    expect(isKvmSource('kvm:/a.qcow2')).toBe(true);
    expect(isKvmSource('kvm+qmp:/q.sock?node=d')).toBe(true);
    expect(isKvmSource('nbd+unix:///x?socket=/s')).toBe(false);
    expect(isKvmSource('/var/kvm:disk.img')).toBe(false);
  });

  it('parses images at rest, naming the disk after the file', () => {
    const fe = kvmFrontEnd('kvm:/var/lib/vm/web 01.qcow2');
    expect(fe).toBeInstanceOf(KvmImageFrontEnd);
    expect(fe.diskName).toBe('web_01');
    expect(kvmFrontEnd('kvm:///abs/d.qcow2?connections=4').diskName).toBe('d');
  });

  it('parses running VMs, naming the disk after the node', () => {
    const fe = kvmFrontEnd('kvm+qmp:/run/vm/qmp.sock?node=drive-virtio0&nbd=/run/vm/nbd.sock&fleece-dir=/big');
    expect(fe).toBeInstanceOf(KvmQmpFrontEnd);
    expect(fe.diskName).toBe('drive-virtio0');
  });

  it('rejects what it does not understand', () => {
    expect(code(() => kvmFrontEnd('kvm+qmp:/run/vm/qmp.sock'))).toBe('INVALID_ARGUMENT');
    expect(code(() => kvmFrontEnd('kvm+qmp:/q.sock?node=d&bogus=1'))).toBe('INVALID_ARGUMENT');
    expect(code(() => kvmFrontEnd('kvm:/a.qcow2?node=d'))).toBe('INVALID_ARGUMENT');
    expect(code(() => kvmFrontEnd('kvm:?connections=2'))).toBe('INVALID_ARGUMENT');
    expect(code(() => kvmFrontEnd('kvm:/a.qcow2?connections=0'))).toBe('INVALID_ARGUMENT');
    expect(code(() => kvmFrontEnd('kvm:/a.qcow2?connections=x'))).toBe('INVALID_ARGUMENT');
  });
});
