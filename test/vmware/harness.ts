/**
 * A two-disk VM on the real vSphere simulator, fronted by the CBT front: the shared
 * setup of the VMware integration tests.
 *
 * The simulator's default VM (`DC0/vm/DC0_C0_RP0_VM0`) has one 1 MiB disk
 * (`disk1.vmdk`, key 204 or so) whose flat file is empty; we add a second disk with
 * ReconfigVM_Task (fileOperation=create) and size both flat files to their capacity,
 * so the simulator's /folder endpoint serves real raw images.
 */
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { disksOf, splitDatastorePath, toMoRef, VimClient, type MoRef, type VmwareDisk } from '../../adapters/vmware/index.js';
import { child, escapeXml } from '../../adapters/_xml.js';
import { CbtFront } from './cbt-front.js';
import { startVcsim, type Vcsim } from './vcsim.js';

export const USER = 'user';
export const PASSWORD = 'pass';
export const VM_PATH = 'DC0/vm/DC0_C0_RP0_VM0';
const SECOND_DISK_KB = 10 * 1024 + 12;

export interface Lab {
  readonly sim: Vcsim;
  readonly front: CbtFront;
  /** A client of the simulator itself (not through the front), to inspect its inventory. */
  readonly admin: VimClient;
  readonly vm: MoRef;
  readonly disks: readonly (VmwareDisk & { flatFile: string })[];
  /** `vmware://` URI of the VM through the front. */
  uri(options?: string): string;
  /** Snapshots the simulator's inventory holds for the VM. */
  snapshots(): Promise<string[]>;
  stop(): Promise<void>;
}

export async function startLab(): Promise<Lab> {
  const sim = await startVcsim();
  let front: CbtFront | undefined;
  try {
    const admin = await VimClient.login({ endpoint: { protocol: 'http:', host: '127.0.0.1', port: sim.port }, user: USER, password: PASSWORD });
    const vm = toMoRef(child(await admin.call('FindByInventoryPath', admin.serviceContent.searchIndex, `<inventoryPath>${escapeXml(VM_PATH)}</inventoryPath>`), 'returnval'), 'vm');
    const before = disksOf((await admin.properties(vm, ['config.hardware.device'])).get('config.hardware.device'));
    const first = before[0]!;
    const dir = splitDatastorePath(first.fileName);
    const controllerKey = (await admin.properties(vm, ['config.hardware.device'])).get('config.hardware.device')!.children.find((d) => d.type === 'VirtualDisk')!.children.find((c) => c.name === 'controllerKey')!.text;
    const file = `[${dir.datastore}] ${dir.path.replace(/[^/]*$/, 'disk2.vmdk')}`;
    const add =
      '<spec><deviceChange><operation>add</operation><fileOperation>create</fileOperation><device xsi:type="VirtualDisk"><key>-1</key>' +
      `<backing xsi:type="VirtualDiskFlatVer2BackingInfo"><fileName>${escapeXml(file)}</fileName><diskMode>persistent</diskMode><thinProvisioned>true</thinProvisioned></backing>` +
      `<controllerKey>${controllerKey}</controllerKey><unitNumber>1</unitNumber><capacityInKB>${SECOND_DISK_KB}</capacityInKB></device></deviceChange></spec>`;
    await admin.task('ReconfigVM_Task', vm, add, 30_000);
    const disks = disksOf((await admin.properties(vm, ['config.hardware.device'])).get('config.hardware.device')).map((d) => {
      const p = splitDatastorePath(d.fileName);
      return { ...d, flatFile: join(sim.datastores[p.datastore]!, p.path.replace(/\.vmdk$/, '-flat.vmdk')) };
    });
    front = await CbtFront.start(sim.port, PASSWORD);
    for (const d of disks) {
      const fh = await open(d.flatFile, 'a');
      await fh.truncate(d.sizeBytes);
      await fh.close();
      front.track(vm.value, d.key, d.flatFile, d.sizeBytes);
    }
    const f = front;
    return {
      sim,
      front: f,
      admin,
      vm,
      disks,
      uri: (options = '') => `vmware://${USER}@127.0.0.1:${f.port}/${VM_PATH}?http=1${options}`,
      snapshots: async () => {
        const tree = (await admin.properties(vm, ['snapshot'])).get('snapshot');
        return tree ? [...new Set([...JSON.stringify(treeRefs(tree)).matchAll(/snapshot-\d+/g)].map((m) => m[0]))] : [];
      },
      stop: async () => {
        await admin.logout();
        await f.stop();
        await sim.stop();
      },
    };
  } catch (err) {
    await front?.stop();
    await sim.stop();
    throw err;
  }
}

function treeRefs(el: { text: string; children: readonly unknown[] }): unknown {
  return { t: el.text, c: el.children.map((c) => treeRefs(c as { text: string; children: readonly unknown[] })) };
}
