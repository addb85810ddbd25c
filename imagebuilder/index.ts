/** buildfleet/imagebuilder: references, registry client, transports, copy and inspect, image configs and manifests. */
export * from './errors.js';
export * from './oci/index.js';
export * from './mutate/index.js';
export { compressor, decompressor, recompress } from './compress/codecs.js';
export * from './copy/index.js';
export * from './transports/index.js';
