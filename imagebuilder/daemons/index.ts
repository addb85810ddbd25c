export { Daemon, freePort } from './process.js';
export { DockerEngine, type DockerEngineOptions, unmountBelow, requireCommands } from './docker-engine.js';
export { RegistryServer, type RegistryServerOptions, type RegistryAuth } from './registry-server.js';
export { importBusyboxBase } from './base-image.js';
