import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { BuildfleetError } from '../errors.js';
import { describeParseError } from '../oci/parse-error.js';
import type { Endpoint, RegistryOptions } from './options.js';

/** What a client authenticates with: a user and password, or an OAuth2 refresh ("identity") token. */
export type Credentials =
  | { kind: 'basic'; username: string; password: string; source: string }
  | { kind: 'identity-token'; token: string; source: string };

/** "for user alice" / "with an identity token": for error messages, never the secret. */
export function describeCredentials(credentials: Credentials | undefined): string {
  if (!credentials) return 'without credentials';
  return credentials.kind === 'basic' ? `for user ${credentials.username}` : 'with an identity token';
}

export function defaultAuthFile(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.DOCKER_CONFIG || join(homedir(), '.docker'), 'config.json');
}

const AuthEntry = z.looseObject({
  auth: z.string().optional(),
  username: z.string().optional(),
  password: z.string().optional(),
  identitytoken: z.string().optional(),
});
const DockerConfig = z.looseObject({
  auths: z.record(z.string(), AuthEntry).optional(),
  credHelpers: z.record(z.string(), z.string()).optional(),
  credsStore: z.string().optional(),
});
type DockerConfig = z.infer<typeof DockerConfig>;

/** `https://host/v1/` and `host` name the same registry in a config file. */
function normaliseKey(key: string): string {
  return key.replace(/^[a-z]+:\/\//i, '').replace(/\/.*$/, '').toLowerCase();
}

function findKey<T>(record: Record<string, T> | undefined, endpoint: Endpoint): T | undefined {
  if (!record) return undefined;
  for (const wanted of endpoint.credentialKeys) {
    if (record[wanted] !== undefined) return record[wanted];
  }
  const normalised = new Set(endpoint.credentialKeys.map(normaliseKey));
  for (const [key, value] of Object.entries(record)) {
    if (normalised.has(normaliseKey(key))) return value;
  }
  return undefined;
}

async function readConfig(path: string, explicit: boolean): Promise<DockerConfig | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && !explicit) return undefined;
    throw new BuildfleetError('usage', `cannot read docker config ${path}: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new BuildfleetError('format', `docker config ${path} is not valid JSON at ${describeParseError(err, text)}`);
  }
  const parsed = DockerConfig.safeParse(raw);
  if (!parsed.success) throw new BuildfleetError('format', `docker config ${path} is malformed: ${parsed.error.issues[0]?.message}`);
  return parsed.data;
}

function fromEntry(entry: z.infer<typeof AuthEntry>, source: string): Credentials | undefined {
  if (entry.identitytoken) return { kind: 'identity-token', token: entry.identitytoken, source };
  if (entry.auth) {
    const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon <= 0) throw new BuildfleetError('format', `${source}: "auth" is not base64 of user:password`);
    return { kind: 'basic', username: decoded.slice(0, colon), password: decoded.slice(colon + 1), source };
  }
  if (entry.username && entry.password !== undefined) return { kind: 'basic', username: entry.username, password: entry.password, source };
  return undefined;
}

const HelperAnswer = z.looseObject({ Username: z.string().optional(), Secret: z.string() });

/** Runs `docker-credential-NAME get` with the server on stdin, as the Docker CLI does. */
export async function runCredentialHelper(name: string, serverUrl: string, configPath: string): Promise<Credentials | undefined> {
  const command = `docker-credential-${name}`;
  // Loaded here: few hosts use a helper, and execa is a tenth of a second of start-up for every command.
  const { execa } = await import('execa');
  const result = await execa(command, ['get'], { input: serverUrl, reject: false, timeout: 30_000, stripFinalNewline: true });
  if ((result as { code?: string }).code === 'ENOENT' || /ENOENT/.test(String(result.message ?? ''))) {
    throw new BuildfleetError('environment', `credential helper ${command} named in ${configPath} is not on PATH`);
  }
  const output = `${result.stdout}\n${result.stderr}`;
  if (result.exitCode !== 0) {
    if (/credentials not found/i.test(output)) return undefined;
    const line = output.trim().split('\n')[0] ?? '';
    throw new BuildfleetError('auth', `credential helper ${command} failed for ${serverUrl}: ${line || `exit code ${result.exitCode}`}`);
  }
  let answer: z.infer<typeof HelperAnswer>;
  try {
    answer = HelperAnswer.parse(JSON.parse(result.stdout));
  } catch {
    throw new BuildfleetError('format', `credential helper ${command} did not answer JSON with Username and Secret`);
  }
  const source = `${command} (${configPath})`;
  if (answer.Username === '<token>') return { kind: 'identity-token', token: answer.Secret, source };
  return { kind: 'basic', username: answer.Username ?? '', password: answer.Secret, source };
}

/**
 * Credentials for a registry: explicit options first, then the docker config file with Docker's
 * precedence: `credHelpers[host]`, then `credsStore`, then inline `auths[host]`.
 * Undefined means anonymous.
 */
export async function resolveCredentials(endpoint: Endpoint, options: RegistryOptions): Promise<Credentials | undefined> {
  const explicit = options.credentials;
  if (explicit) {
    return 'identityToken' in explicit
      ? { kind: 'identity-token', token: explicit.identityToken, source: 'options' }
      : { kind: 'basic', username: explicit.username, password: explicit.password, source: 'options' };
  }
  const path = options.authFile ?? defaultAuthFile();
  const config = await readConfig(path, options.authFile !== undefined);
  if (!config) return undefined;
  const helper = findKey(config.credHelpers, endpoint);
  if (helper) return runCredentialHelper(helper, endpoint.helperServerUrl, path);
  const entry = findKey(config.auths, endpoint);
  const inline = entry ? fromEntry(entry, path) : undefined;
  if (config.credsStore) {
    const stored = await runCredentialHelper(config.credsStore, endpoint.helperServerUrl, path);
    if (stored) return stored;
  }
  return inline;
}
