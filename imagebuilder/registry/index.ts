/**
 * The OCI distribution API client: pull and push of blobs and manifests, cross-repository
 * mounts, Basic and Bearer-token authentication, docker config credentials, retries.
 */
export { RegistryClient, type FetchedManifest } from './client.js';
export type { RegistryOptions, Endpoint } from './options.js';
export { endpointFor } from './options.js';
export { type Credentials, resolveCredentials, defaultAuthFile, describeCredentials } from './credentials.js';
export { parseChallenges, repositoryScope, type Challenge } from './auth.js';
export type { UploadExpectation } from './upload.js';
