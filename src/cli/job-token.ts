import { readFileSync } from 'node:fs';
import { decodeJwt } from 'jose';
import type { Env } from '../config/env';

/** Where the job's OIDC token comes from; read again for each use, since platforms rotate them. */
export interface JobTokenSource {
  /** For messages: `file /var/run/...`, `GitHub Actions`. */
  describe: string;
  read(): Promise<string>;
}

/**
 * The job's OIDC token, from the first source present:
 * 1. `--token-file` (a Kubernetes projected service-account token, any file a platform writes);
 * 2. `--token-env VAR`;
 * 3. GitHub Actions' own mechanism (ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN, with `permissions: id-token: write`),
 *    asking for a token with the broker's audience;
 * 4. TASKLEASE_ID_TOKEN, e.g. a GitLab `id_tokens:` entry of that name.
 */
export function jobTokenSource(
  options: { tokenFile?: string; tokenEnv?: string; audience: string },
  env: Pick<Env, 'ACTIONS_ID_TOKEN_REQUEST_URL' | 'ACTIONS_ID_TOKEN_REQUEST_TOKEN' | 'TASKLEASE_ID_TOKEN'>,
  readVariable: (name: string) => string | undefined,
): JobTokenSource {
  if (options.tokenFile) {
    const file = options.tokenFile;
    return {
      describe: `file ${file}`,
      read: async () => nonEmpty(readFileSync(file, 'utf8'), `file ${file}`),
    };
  }
  if (options.tokenEnv) {
    const name = options.tokenEnv;
    return { describe: `$${name}`, read: async () => nonEmpty(readVariable(name) ?? '', `$${name}`) };
  }
  const requestUrl = env.ACTIONS_ID_TOKEN_REQUEST_URL;
  const requestToken = env.ACTIONS_ID_TOKEN_REQUEST_TOKEN;
  if (requestUrl && requestToken) {
    return {
      describe: 'GitHub Actions',
      read: async () => {
        const url = new URL(requestUrl);
        url.searchParams.set('audience', options.audience);
        const response = await fetch(url, { headers: { authorization: `bearer ${requestToken}` } });
        if (!response.ok)
          throw new Error(
            `GitHub Actions refused an OIDC token (${response.status}): does the job have permissions: id-token: write?`,
          );
        const body = (await response.json()) as { value?: string };
        return nonEmpty(body.value ?? '', 'GitHub Actions');
      },
    };
  }
  const idToken = env.TASKLEASE_ID_TOKEN;
  if (idToken)
    return { describe: '$TASKLEASE_ID_TOKEN', read: async () => nonEmpty(idToken, '$TASKLEASE_ID_TOKEN') };
  throw new Error(
    'no job token: give --token-file or --token-env, run in GitHub Actions with id-token: write, or set TASKLEASE_ID_TOKEN',
  );
}

function nonEmpty(value: string, where: string): string {
  const token = value.trim();
  if (!token) throw new Error(`no token in ${where}`);
  return token;
}

/** True while a JWT's `exp` is more than a few seconds away (decoded only: the broker verifies it). */
export function stillValid(token: string): boolean {
  try {
    const { exp } = decodeJwt(token);
    return typeof exp === 'number' && exp * 1000 > Date.now() + 5_000;
  } catch {
    return false;
  }
}

/**
 * The token exchanged first while it is valid (for SPIFFE and OIDC issuers the token itself is the job: a
 * new one would not reach the task), then a fresh one from the source (the first may expire during a long
 * command, or a long wait for an approval).
 */
export const currentJobToken = (first: string, source: JobTokenSource) => async (): Promise<string> =>
  stillValid(first) ? first : source.read();
