import { createServer } from 'node:http';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { credentialEnvironment } from '../../src/cli/commands/exec';
import { jobTokenSource } from '../../src/cli/job-token';
import { tempDir } from '../support/fixtures';

describe('tasklease exec: where the job token comes from', () => {
  it('asks GitHub Actions for a token with the broker’s audience, with the runner’s request token', async () => {
    const seen: Array<{ url: string; authorization?: string }> = [];
    const server = createServer((req, res) => {
      seen.push({ url: req.url ?? '', authorization: req.headers.authorization });
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ value: 'github.oidc.token' }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    try {
      const source = jobTokenSource(
        { audience: 'tasklease-prod' },
        {
          ACTIONS_ID_TOKEN_REQUEST_URL: `http://127.0.0.1:${port}/token?api-version=2.0`,
          ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'runner-request-token',
        },
        () => undefined,
      );
      expect(source.describe).toBe('GitHub Actions');
      expect(await source.read()).toBe('github.oidc.token');
      expect(seen).toEqual([
        {
          url: '/token?api-version=2.0&audience=tasklease-prod',
          authorization: 'bearer runner-request-token',
        },
      ]);
    } finally {
      server.close();
    }
  });

  it('prefers --token-file, re-read at each use (a rotating projected token), then --token-env, then TASKLEASE_ID_TOKEN', async () => {
    const file = path.join(tempDir('job-token'), 'token');
    writeFileSync(file, 'first\n');
    const fromFile = jobTokenSource(
      { tokenFile: file, audience: 'a' },
      { TASKLEASE_ID_TOKEN: 'gitlab' },
      () => 'x',
    );
    expect(await fromFile.read()).toBe('first');
    writeFileSync(file, 'rotated');
    expect(await fromFile.read()).toBe('rotated');
    const fromEnv = jobTokenSource({ tokenEnv: 'MY_TOKEN', audience: 'a' }, {}, (name) =>
      name === 'MY_TOKEN' ? 'env-token' : undefined,
    );
    expect(await fromEnv.read()).toBe('env-token');
    expect(
      await jobTokenSource(
        { audience: 'a' },
        { TASKLEASE_ID_TOKEN: 'gitlab-id-token' },
        () => undefined,
      ).read(),
    ).toBe('gitlab-id-token');
    expect(() => jobTokenSource({ audience: 'a' }, {}, () => undefined)).toThrow(/no job token/);
  });
});

describe('tasklease exec: the environment a credential becomes', () => {
  const issued = (type: string, credential: Record<string, unknown>, accessToken = '') => ({
    access_token: accessToken,
    issued_token_type: `urn:tasklease:params:oauth:token-type:${type}`,
    credential,
    lease_id: 'l',
    task_id: 't',
    expires_at: '',
  });

  it.each([
    [
      'AWS credentials: the SDKs’ own variables',
      'reports',
      issued('aws-credentials', {
        accessKeyId: 'ASIA1',
        secretAccessKey: 's',
        sessionToken: 't',
        expiration: 'e',
      }),
      {
        AWS_ACCESS_KEY_ID: 'ASIA1',
        AWS_SECRET_ACCESS_KEY: 's',
        AWS_SESSION_TOKEN: 't',
        AWS_CREDENTIAL_EXPIRATION: 'e',
      },
    ],
    [
      'a Vault token: VAULT_TOKEN',
      'deploy',
      issued('vault-token', { token: 'hvs.x', accessor: 'a' }),
      { VAULT_TOKEN: 'hvs.x' },
    ],
    [
      'a Vault dynamic secret: one variable per field',
      'db-read',
      issued('vault-secret', { leaseId: 'database/creds/r/1', data: { username: 'u', password: 'p' } }),
      {
        TASKLEASE_DB_READ_LEASE_ID: 'database/creds/r/1',
        TASKLEASE_DB_READ_USERNAME: 'u',
        TASKLEASE_DB_READ_PASSWORD: 'p',
      },
    ],
    [
      'a JWT: TASKLEASE_<GRANT>_TOKEN',
      'artifacts-api',
      { ...issued('x', {}, 'eyJ.jwt'), issued_token_type: 'urn:ietf:params:oauth:token-type:jwt' },
      { TASKLEASE_ARTIFACTS_API_TOKEN: 'eyJ.jwt' },
    ],
  ])('%s', (_name, grant, answer, expected) => {
    expect(credentialEnvironment(grant, answer)).toEqual(expected);
  });
});
