export { Daemon, freePort } from './process.js';
export { DockerEngine, type DockerEngineOptions, unmountBelow } from './docker-engine.js';
export { containerdConfig, dockerdArgs, requireCommands } from './engine-config.js';
export { RegistryServer, type RegistryServerOptions, type RegistryAuthConfig } from './registry-server.js';
export { importBusyboxBase } from './base-image.js';
