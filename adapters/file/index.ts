/** Raw image files and block devices (the SAN / hot-add transport). */
export { FileSource } from './file-source.js';
export { FileFrontEnd, type DiskOpener } from './front-end.js';
