/** buildfleet/imagebuilder: references, registry client, transports, copy and inspect. */
export * from './errors.js';
export * from './oci/index.js';
export * from './copy/index.js';
export * from './transports/index.js';
