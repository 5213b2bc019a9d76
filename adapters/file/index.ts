/** Raw image files and block devices (the SAN / hot-add transport). */
export { FileSource } from './file-source.js';
export { FileFrontEnd } from './front-end.js';
