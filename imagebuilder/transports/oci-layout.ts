/**
 * The `oci:DIR[:TAG]` transport: an OCI image layout directory (image-spec image-layout.md).
 *
 *   DIR/oci-layout          {"imageLayoutVersion":"1.0.0"}
 *   DIR/index.json          an image index; entries are tagged by the ref.name annotation
 *   DIR/blobs/<alg>/<hex>   content-addressed blobs
 *
 * Writers put blobs and manifests first and change index.json last (temp + rename, under
 * DIR/index.json.lock), so a reader never sees an entry naming an incomplete image. Temp files
 * are dot-files named `.NAME.tmp-PID-HOST-RAND` (transports/temp-files.ts): readers only open blobs
 * by digest and never see them; a writer opening the layout sweeps those of dead processes.
 */

// The module others import; the parts live in oci-layout/:
//   layout-files.ts  names, blob paths, reading index.json and blobs, atomic small-file writes
//   index-lock.ts    index.json.lock, and removing what crashed writers left
//   source.ts        reading an image (openOciLayoutSource)
//   destination.ts   writing an image (openOciLayoutDestination)

export { REF_NAME_ANNOTATION } from './oci-layout/layout-files.js';
export { removeOciLayoutLeftovers } from './oci-layout/index-lock.js';
export { openOciLayoutSource } from './oci-layout/source.js';
export { openOciLayoutDestination, type OciLayoutDestinationOptions } from './oci-layout/destination.js';
