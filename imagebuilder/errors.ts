/**
 * One error type for everything a user can cause or fix (bad reference, registry down,
 * wrong credentials, corrupt data). The CLI prints `message` as the single error line;
 * anything else escaping is a bug and gets a stack trace.
 */
export type ErrorKind =
  | 'usage'
  | 'reference'
  | 'not-found'
  | 'auth'
  | 'network'
  | 'integrity'
  | 'format'
  | 'unsupported'
  | 'environment'
  | 'conflict'
  /** The image build itself failed: a Dockerfile step exited non-zero, or the engine refused the Dockerfile. */
  | 'build';

export class BuildfleetError extends Error {
  readonly kind: ErrorKind;
  constructor(kind: ErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BuildfleetError';
    this.kind = kind;
  }
}

export function isBuildfleetError(err: unknown): err is BuildfleetError {
  return err instanceof BuildfleetError;
}

/** Exit codes a CI job can act on. */
export const exitCodeFor: Record<ErrorKind, number> = {
  usage: 2,
  reference: 2,
  'not-found': 3,
  auth: 4,
  network: 5,
  integrity: 6,
  format: 6,
  unsupported: 7,
  environment: 8,
  conflict: 9,
  build: 10,
};
