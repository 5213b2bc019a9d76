/**
 * Page-aligned shared memory, for buffers handed to direct I/O (O_DIRECT needs the
 * memory, the offset and the length aligned to the device's block size).
 *
 * A SharedArrayBuffer's bytes come from malloc and start 16 bytes into a page, so
 * no view of one is ever block-aligned. The memory of a shared WebAssembly.Memory is
 * mapped by V8 page by page and starts on a page boundary; its `buffer` is an ordinary
 * SharedArrayBuffer (shared with workers without copying). Sizes are rounded up to
 * 64 KiB WebAssembly pages. Nothing here relies on the alignment for correctness: a
 * direct write of memory that is not aligned fails with EINVAL, and the writer then
 * falls back to buffered I/O (see src/restore-targets.ts).
 *
 * Large buffers are advised for transparent huge pages (native.ts `adviseHugePages`):
 * they are first touched by the hot path, where a page fault per 4 KiB is measurable.
 */
import { adviseHugePages } from './native.js';

/** Bytes of a WebAssembly memory page. */
export const WASM_PAGE = 64 * 1024;
/** WebAssembly memories hold at most 65536 pages (4 GiB). */
export const MAX_WASM_PAGES = 65536;

/** Alignment (bytes) of the memory `alignedShared` returns, as far as this module knows. */
export const MEMORY_ALIGNMENT = 4096;

/** The one WebAssembly constructor used here (the project's TypeScript libs carry no WebAssembly types). */
interface SharedMemoryCtor {
  new (d: { initial: number; maximum: number; shared: true }): { readonly buffer: SharedArrayBuffer };
}
const WasmMemory = (globalThis as unknown as { WebAssembly: { Memory: SharedMemoryCtor } }).WebAssembly.Memory;

/** `bytes` of zeroed shared memory whose first byte is page-aligned. */
export function alignedShared(bytes: number): Uint8Array {
  const pages = Math.max(1, Math.ceil(bytes / WASM_PAGE));
  if (pages > MAX_WASM_PAGES) return new Uint8Array(new SharedArrayBuffer(bytes));
  const mem = new WasmMemory({ initial: pages, maximum: pages, shared: true });
  const view = new Uint8Array(mem.buffer, 0, bytes);
  adviseHugePages(view);
  return view;
}
