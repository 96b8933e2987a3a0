// Public API of the safe OCI layer unpacker.
export { applyLayer, type ApplyLayerOptions, type ApplyLayerResult } from './apply-layer.js';
export { openLayerStream, sniffCompression, type LayerCompression } from './decompress.js';
export { MAX_ZSTD_WINDOW } from './zstd-stream.js';
export { MAX_SYMLINKS, entryComponents } from './scoped-path.js';
export { entryMeta, type EntryMeta } from './entry-meta.js';
export { unpackedSizeHint, zstdContentSize, UNKNOWN_RATIO } from './size-hint.js';
