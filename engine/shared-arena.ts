/**
 * The shared arena: one process-wide shared WebAssembly.Memory that the backup hot path
 * carves its long-lived buffers from (window slabs, container stages), so that moving
 * bytes between them is one `memory.copy`.
 *
 * Why: V8 copies between views of shared memory (SharedArrayBuffer, shared wasm
 * memory) with relaxed atomic copies, not memcpy, and byte by byte when the two sides'
 * offsets differ modulo 8, as a payload and its place in a stage usually do:
 * `TypedArray.prototype.set` and `Buffer.copy` measured 1.5 GB/s for such 256 KiB
 * copies here (3 GB/s for 8 MiB ones) against 8-24 GB/s for ordinary ArrayBuffers.
 * Copying each new payload from its slab into the container stage cost about a fifth
 * of the backup's main thread. WebAssembly's bulk `memory.copy` within one memory is a
 * memmove (8.5 GB/s for the same 256 KiB copies, 22-28 GB/s for 8 MiB; bench/RESULTS.md
 * "Shared-memory copies"), but only within one memory: hence one arena for both sides.
 *
 * Terms: a *block* is a run of whole 64 KiB wasm pages, page-aligned (so also fit for
 * direct I/O, see aligned-memory.ts). `alloc` hands out blocks, reusing freed ones of
 * the same page count (zeroed again) before growing the memory; `free` takes them back.
 * The caller must not free a block that a worker or an I/O call may still touch.
 * When the arena cannot grow (its 4 GiB maximum, or the address space), `alloc`
 * returns ordinary aligned shared memory and `copyBytes` falls back to `set`: slower,
 * never wrong.
 */
import { alignedShared, MAX_WASM_PAGES as MAX_PAGES, WASM_PAGE } from './aligned-memory.js';
import { ChunkvaultError } from './errors.js';
import { adviseHugePages } from './native.js';

interface WasmMemory {
  readonly buffer: SharedArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  Memory: new (d: { initial: number; maximum: number; shared: true }) => WasmMemory;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: Record<string, (a: number, b: number, c: number) => void> };
}
const Wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

/*
 * A hand-assembled module that imports the arena's memory as env.mem (shared, max 65536
 * pages) and exports copy(dst, src, n) = memory.copy and fill(dst, value, n) =
 * memory.fill. Sections: type, import, function, export, code.
 */
// prettier-ignore
const MODULE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
  0x01, 0x07, 0x01, 0x60, 0x03, 0x7f, 0x7f, 0x7f, 0x00,
  0x02, 0x0f, 0x01, 0x03, 0x65, 0x6e, 0x76, 0x03, 0x6d, 0x65, 0x6d, 0x02, 0x03, 0x00, 0x80, 0x80, 0x04,
  0x03, 0x03, 0x02, 0x00, 0x00,
  0x07, 0x0f, 0x02, 0x04, 0x63, 0x6f, 0x70, 0x79, 0x00, 0x00, 0x04, 0x66, 0x69, 0x6c, 0x6c, 0x00, 0x01,
  0x0a, 0x1a, 0x02,
  0x0c, 0x00, 0x20, 0x00, 0x20, 0x01, 0x20, 0x02, 0xfc, 0x0a, 0x00, 0x00, 0x0b,
  0x0b, 0x00, 0x20, 0x00, 0x20, 0x01, 0x20, 0x02, 0xfc, 0x0b, 0x00, 0x0b,
]);

class SharedArena {
  private readonly memory: WasmMemory;
  private readonly copyFn: (dst: number, src: number, n: number) => void;
  private readonly fillFn: (dst: number, value: number, n: number) => void;
  /** Every `buffer` object the memory has had: a view on one of them is in the arena. */
  private readonly buffers = new WeakSet<ArrayBufferLike>();
  /** Freed blocks by page count: their byte offsets. */
  private readonly freeBlocks = new Map<number, number[]>();
  /** Blocks handed out and not freed: byte offset -> page count. */
  private readonly live = new Map<number, number>();
  private pages = 0;

  constructor() {
    this.memory = new Wasm.Memory({ initial: 0, maximum: MAX_PAGES, shared: true });
    const instance = new Wasm.Instance(new Wasm.Module(MODULE), { env: { mem: this.memory } });
    this.copyFn = instance.exports.copy!;
    this.fillFn = instance.exports.fill!;
    this.buffers.add(this.memory.buffer);
  }

  alloc(bytes: number): Uint8Array {
    const pages = Math.max(1, Math.ceil(bytes / WASM_PAGE));
    const reused = this.freeBlocks.get(pages)?.pop();
    if (reused !== undefined) {
      this.fillFn(reused, 0, pages * WASM_PAGE);
      this.live.set(reused, pages);
      return new Uint8Array(this.memory.buffer, reused, bytes);
    }
    if (this.pages + pages > MAX_PAGES) return alignedShared(bytes);
    try {
      this.memory.grow(pages);
    } catch {
      return alignedShared(bytes);
    }
    const offset = this.pages * WASM_PAGE;
    this.pages += pages;
    this.live.set(offset, pages);
    const buffer = this.memory.buffer;
    this.buffers.add(buffer);
    adviseHugePages(new Uint8Array(buffer, offset, pages * WASM_PAGE));
    return new Uint8Array(buffer, offset, bytes);
  }

  free(block: Uint8Array): void {
    if (!this.buffers.has(block.buffer)) return;
    // A block given out twice would be shared by two users: refuse anything but a live block.
    const pages = this.live.get(block.byteOffset);
    if (pages === undefined) throw new ChunkvaultError('INTERNAL', `shared arena: freeing memory at ${block.byteOffset} that is not a live block`);
    this.live.delete(block.byteOffset);
    let list = this.freeBlocks.get(pages);
    if (!list) this.freeBlocks.set(pages, (list = []));
    list.push(block.byteOffset);
  }

  contains(view: ArrayBufferView): boolean {
    return this.buffers.has(view.buffer);
  }

  copy(dst: Uint8Array, dstOffset: number, src: Uint8Array): void {
    this.copyFn(dst.byteOffset + dstOffset, src.byteOffset, src.byteLength);
  }

}

let arena: SharedArena | undefined;

/** The process's arena, made on first use. */
function theArena(): SharedArena {
  arena ??= new SharedArena();
  return arena;
}

/**
 * `bytes` of zeroed, page-aligned shared memory from the arena (or, when it is full,
 * from `alignedShared`). Give it back with `freeArenaBlock` once nothing uses it.
 */
export function allocArenaBlock(bytes: number): Uint8Array {
  return theArena().alloc(bytes);
}

/** Returns a block from `allocArenaBlock` for reuse; other memory is left to the GC. */
export function freeArenaBlock(block: Uint8Array): void {
  theArena().free(block);
}

/**
 * Copies `src` into `dst` at `dstOffset` (which must fit): one `memory.copy` when both
 * views are arena memory, else `TypedArray.prototype.set`.
 */
export function copyBytes(dst: Uint8Array, dstOffset: number, src: Uint8Array): void {
  if (dstOffset < 0 || dstOffset + src.byteLength > dst.byteLength) throw new RangeError('copyBytes: source does not fit at that offset');
  const a = arena;
  if (a && src.byteLength >= 256 && a.contains(dst) && a.contains(src)) a.copy(dst, dstOffset, src);
  else dst.set(src, dstOffset);
}
