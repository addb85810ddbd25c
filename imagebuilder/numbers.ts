import { BuildfleetError } from './errors.js';

/*
 * Whole numbers from text a user typed (a flag, an environment variable): a `usage` error
 * naming where the text came from, so the CLI and the library word it the same way.
 */

export function nonNegativeInt(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new BuildfleetError('usage', `${flag} must be a whole number >= 0, got "${value}"`);
  return n;
}

export function positiveInt(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new BuildfleetError('usage', `${flag} must be a positive whole number, got "${value}"`);
  return n;
}
