import type { TransportOptions } from '../imagebuilder/transports/index.js';
import type { GlobalOptions } from './global-options.js';
import { BuildfleetError } from './output.js';

/** Global flags -> transport settings (registry credentials, TLS, insecure hosts). */
export function transportOptions(options: GlobalOptions): TransportOptions {
  return {
    registry: {
      ...(options.insecure.length > 0 && { insecure: options.insecure }),
      ...(options.caFile && { caFile: options.caFile }),
      ...(options.authfile && { authFile: options.authfile }),
      ...(options.creds && { credentials: parseCreds(options.creds) }),
    },
  };
}

function parseCreds(text: string): { username: string; password: string } {
  const colon = text.indexOf(':');
  if (colon <= 0) throw new BuildfleetError('usage', '--creds must be USER:PASSWORD');
  return { username: text.slice(0, colon), password: text.slice(colon + 1) };
}

export { nonNegativeInt, positiveInt } from '../imagebuilder/numbers.js';
