export { compressor, decompressor, recompress } from './codecs.js';
export { ByteCounter, Coalesce, explainStreamError, pipeOn } from './streams.js';
export { parallelGzip, parallelGzipSync, defaultGzipEngine, type GzipEngine, type ParallelGzipOptions } from './parallel-gzip.js';
export { checkCompressionLevel, parseCompression } from './levels.js';
