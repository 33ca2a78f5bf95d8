import { createHmac, createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { base64url, type JWK, type JWTPayload } from 'jose';
import { parseConfig } from '../../src/config/load-config';
import type { IssuerConfig } from '../../src/config/schema';
import { BrokerError } from '../../src/domain/errors';
import type { Identity } from '../../src/domain/types';
import { createAttestationVerifier, type AttestationVerifier } from '../../src/identity/verify-attestation';
import { createTestIssuer, platformClaims, type TestIssuer } from '../support/fixtures';

/** What every refused caller is told, whatever the reason (the reason goes to the log only). */
const UNAUTHENTICATED_MESSAGE = 'identity token rejected';

/** A fixed clock: every token below is stamped relative to it, so nothing depends on the wall clock. */
const NOW_S = 1_800_000_000;
const NOW_MS = NOW_S * 1000;

/** Issuers configured the way an operator would, through the real config schema (defaults applied). */
const configured = (issuers: TestIssuer[]): IssuerConfig[] =>
  parseConfig({ issuers: issuers.map((i) => i.config), grants: {}, policies: '.' }, '/')
    .issuers as IssuerConfig[];

const b64json = (value: unknown) => base64url.encode(JSON.stringify(value));

const publicJwkOf = (issuer: TestIssuer): JWK =>
  (JSON.parse(readFileSync(issuer.jwksFile, 'utf8')) as { keys: JWK[] }).keys[0] as JWK;

/** A token whose header and payload are built by hand, with the signature `sign` computes over them. */
const handBuilt = (header: Record<string, unknown>, payload: JWTPayload, sign: (input: string) => string) => {
  const input = `${b64json(header)}.${b64json(payload)}`;
  return `${input}.${sign(input)}`;
};

interface Harness {
  verifier: AttestationVerifier;
  rejections: { reason: string; issuer?: string; tokenSha256: string }[];
}

const harness = (issuers: IssuerConfig[], nowMs = () => NOW_MS): Harness => {
  const rejections: Harness['rejections'] = [];
  const verifier = createAttestationVerifier(issuers, {
    onReject: (reason, context) => rejections.push({ reason, ...context }),
    nowMs,
  });
  return { verifier, rejections };
};

let agents: TestIssuer;
let other: TestIssuer;
let strict: TestIssuer;
let unconfigured: TestIssuer;

beforeAll(async () => {
  agents = await createTestIssuer({ name: 'agents' });
  other = await createTestIssuer({ name: 'other' });
  strict = await createTestIssuer({ name: 'strict', maxTokenLifetimeSeconds: 600 });
  unconfigured = await createTestIssuer({ name: 'stranger' });
});

/** Claims valid at NOW for `issuer`; a case overrides what it breaks. */
const valid = (issuer: TestIssuer, extra: JWTPayload = {}): JWTPayload => ({
  iss: issuer.iss,
  aud: 'tasklease',
  sub: 'planner',
  iat: NOW_S - 10,
  exp: NOW_S + 300,
  ...extra,
});

describe('createAttestationVerifier refuses', () => {
  let h: Harness;
  beforeAll(() => {
    h = harness(configured([agents, other, strict]));
  });
  afterAll(() => h.verifier.close());
  beforeEach(() => {
    h.rejections.length = 0;
  });

  // [case, token builder, what the logged reason must name, issuer the log attributes it to]
  const cases: [string, () => Promise<string> | string, RegExp, string | undefined][] = [
    [
      'a token for another audience',
      () => agents.sign(valid(agents, { aud: 'someone-else' })),
      /"aud"/,
      'agents',
    ],
    [
      'a token whose aud list does not include ours',
      () => agents.sign(valid(agents, { aud: ['a', 'b'] })),
      /"aud"/,
      'agents',
    ],
    [
      'a token from an issuer nobody configured',
      () => unconfigured.sign(valid(unconfigured)),
      /issuer not configured: https:\/\/stranger/,
      undefined,
    ],
    [
      'a token whose iss differs from a configured one by a trailing slash',
      () => agents.sign(valid(agents, { iss: `${agents.iss}/` })),
      /issuer not configured/,
      undefined,
    ],
    [
      'a token without iss',
      () => agents.sign(valid(agents, { iss: undefined })),
      /issuer not configured/,
      undefined,
    ],
    [
      'an expired token (beyond the clock skew)',
      () => agents.sign(valid(agents, { iat: NOW_S - 400, exp: NOW_S - 31 })),
      /"exp"/,
      'agents',
    ],
    [
      'a token not valid before a time beyond the skew',
      () => agents.sign(valid(agents, { nbf: NOW_S + 31 })),
      /"nbf"/,
      'agents',
    ],
    [
      'an unsigned token (alg: none)',
      () => handBuilt({ alg: 'none', typ: 'JWT' }, valid(agents), () => ''),
      /"alg"/,
      'agents',
    ],
    [
      'an unsigned token (alg: none) that names a real kid',
      () => handBuilt({ alg: 'none', kid: agents.kid }, valid(agents), () => ''),
      /"alg"/,
      'agents',
    ],
    [
      'HS256 keyed with the issuer public key PEM',
      () => {
        const pem = createPublicKey({ key: publicJwkOf(agents) as never, format: 'jwk' }).export({
          type: 'spki',
          format: 'pem',
        });
        return handBuilt({ alg: 'HS256', kid: agents.kid, typ: 'JWT' }, valid(agents), (input) =>
          createHmac('sha256', pem).update(input).digest('base64url'),
        );
      },
      /"alg"/,
      'agents',
    ],
    [
      'HS256 keyed with the issuer public JWK',
      () =>
        handBuilt({ alg: 'HS256', kid: agents.kid }, valid(agents), (input) =>
          createHmac('sha256', JSON.stringify(publicJwkOf(agents)))
            .update(input)
            .digest('base64url'),
        ),
      /"alg"/,
      'agents',
    ],
    [
      'a token signed under an unknown kid',
      () => agents.sign(valid(agents), { header: { kid: 'rotated-away' } }),
      /ERR_JWKS_NO_MATCHING_KEY/,
      'agents',
    ],
    ['a token without exp', () => agents.sign(valid(agents, { exp: undefined })), /"exp"/, 'agents'],
    [
      'a token naming issuer A, signed by issuer B (B kid)',
      () => agents.sign(valid(agents), { key: other.privateKey, header: { kid: other.kid } }),
      /ERR_JWKS_NO_MATCHING_KEY/,
      'agents',
    ],
    [
      'a token naming issuer A, signed by issuer B under A kid',
      () => agents.sign(valid(agents), { key: other.privateKey }),
      /signature verification failed/,
      'agents',
    ],
    [
      'a tampered payload (signature of another payload)',
      async () => {
        const [header, , signature] = (await agents.sign(valid(agents, { sub: 'planner' }))).split('.');
        return `${header}.${b64json(valid(agents, { sub: 'admin' }))}.${signature}`;
      },
      /signature verification failed/,
      'agents',
    ],
    [
      'a lifetime (exp - iat) over the issuer maximum',
      () => strict.sign(valid(strict, { iat: NOW_S - 10, exp: NOW_S - 10 + 601 })),
      /lifetime 601s exceeds .* 600s/,
      'strict',
    ],
    [
      'a lifetime (exp - nbf, no iat) over the issuer maximum',
      () => strict.sign(valid(strict, { iat: undefined, nbf: NOW_S - 10, exp: NOW_S + 600 })),
      /lifetime 610s exceeds/,
      'strict',
    ],
    [
      'a token without iat or nbf that lives longer than the issuer maximum',
      () => strict.sign(valid(strict, { iat: undefined, exp: NOW_S + 600 + 31 })),
      /maximum lifetime/,
      'strict',
    ],
    [
      'a long-lived token whose iat is set in the future to look short-lived',
      () => strict.sign(valid(strict, { iat: NOW_S + 86_400 - 60, exp: NOW_S + 86_400 })),
      /lifetime/,
      'strict',
    ],
    ['a garbage string', () => 'not-a-jwt', /malformed token/, undefined],
    ['three dots of garbage', () => 'a.b.c', /malformed token/, undefined],
    ['an empty string', () => '', /malformed token/, undefined],
    [
      'a token with no subject claim',
      () => agents.sign(valid(agents, { sub: undefined })),
      /subject claim sub missing/,
      'agents',
    ],
    [
      'a token whose subject is not a string',
      () => agents.sign(valid(agents, { sub: 42 as never })),
      /subject claim sub/,
      'agents',
    ],
  ];

  it.each(cases)('%s', async (_name, build, reason, issuer) => {
    const token = await build();
    const error = await h.verifier.verify(token).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(BrokerError);
    expect(error).toMatchObject({ code: 'unauthenticated', status: 401, message: UNAUTHENTICATED_MESSAGE });
    expect(h.rejections).toHaveLength(1);
    expect(h.rejections[0]?.reason).toMatch(reason);
    expect(h.rejections[0]?.issuer).toBe(issuer);
    // The log gets a hash of the token, never the token.
    expect(h.rejections[0]?.tokenSha256).toMatch(/^[0-9a-f]{64}$/);
    const logged = JSON.stringify(h.rejections[0]);
    for (const part of [token, ...token.split('.')].filter((p) => p.length >= 16))
      expect(logged).not.toContain(part);
  });

  it('accepts the same claims when they are right (the cases above fail for their stated reason)', async () => {
    await expect(h.verifier.verify(await agents.sign(valid(agents)))).resolves.toMatchObject({
      issuer: 'agents',
      subject: 'planner',
    });
    await expect(
      h.verifier.verify(await strict.sign(valid(strict, { iat: NOW_S - 10, exp: NOW_S + 590 }))),
    ).resolves.toMatchObject({ issuer: 'strict' });
    expect(h.rejections).toEqual([]);
  });
});

describe('createAttestationVerifier accepts real platform tokens', () => {
  const stamp = (claims: JWTPayload): JWTPayload => ({ ...claims, iat: NOW_S - 5, exp: NOW_S + 295 });

  const platformIssuer = async (
    name: string,
    kind: NonNullable<Parameters<typeof createTestIssuer>[0]['kind']>,
    claims: JWTPayload,
  ) => createTestIssuer({ name, kind, iss: claims.iss as string });

  const verifyOne = async (issuer: TestIssuer, token: string) => {
    const h = harness(configured([issuer]));
    try {
      const identity = await h.verifier.verify(token).catch((error: unknown) => {
        throw new Error(`refused: ${h.rejections.map((r) => r.reason).join('; ')} (${String(error)})`);
      });
      return { identity, rejections: h.rejections };
    } finally {
      h.verifier.close();
    }
  };

  const refusedReason = async (issuer: TestIssuer, token: string) => {
    const h = harness(configured([issuer]));
    try {
      await expect(h.verifier.verify(token)).rejects.toMatchObject({
        code: 'unauthenticated',
        message: UNAUTHENTICATED_MESSAGE,
      });
      return h.rejections.map((r) => r.reason).join('; ');
    } finally {
      h.verifier.close();
    }
  };

  it('GitHub Actions: identity from the repository token', async () => {
    const claims = platformClaims('github-actions');
    const issuer = await platformIssuer('github-actions', 'github-actions', claims);
    const token = await issuer.sign(stamp(claims));
    const { identity } = await verifyOne(issuer, token);
    expect(identity).toMatchObject<Partial<Identity>>({
      issuer: 'github-actions',
      kind: 'github-actions',
      subject: 'repo:octo-org/octo-repo:environment:prod',
      expiresAtMs: (NOW_S + 295) * 1000,
    });
    expect(identity.claims).toMatchObject({
      repository: 'octo-org/octo-repo',
      run_id: '6123456789',
      ref: 'refs/heads/main',
      environment: 'prod',
    });
    expect(identity.tokenSha256).toMatch(/^[0-9a-f]{64}$/);
    expect(identity).not.toHaveProperty('token');
  });

  it('GitHub Actions: a token without run_id is not a workflow token', async () => {
    const { run_id: _drop, ...claims } = platformClaims('github-actions');
    const issuer = await platformIssuer('github-actions', 'github-actions', claims);
    expect(await refusedReason(issuer, await issuer.sign(stamp(claims)))).toMatch(/run_id/);
  });

  it('GitLab: identity from the pipeline token, non-string claims left out', async () => {
    const claims = platformClaims('gitlab');
    const issuer = await platformIssuer('gitlab', 'gitlab', claims);
    const { identity } = await verifyOne(issuer, await issuer.sign(stamp(claims)));
    expect(identity).toMatchObject({
      issuer: 'gitlab',
      kind: 'gitlab',
      subject: 'project_path:mygroup/myproject:ref_type:branch:ref:main',
    });
    expect(identity.claims).toMatchObject({
      project_path: 'mygroup/myproject',
      pipeline_id: '574',
      ref_protected: 'true',
    });
    // runner_id is a number in the token: Cedar's principal.claims is a record of strings.
    expect(identity.claims).not.toHaveProperty('runner_id');
  });

  it('Kubernetes: nested kubernetes.io claims are flattened and the service account derived', async () => {
    const claims = platformClaims('kubernetes');
    const issuer = await platformIssuer('cluster', 'kubernetes', claims);
    const { identity } = await verifyOne(issuer, await issuer.sign(stamp(claims)));
    expect(identity).toMatchObject({
      issuer: 'cluster',
      kind: 'kubernetes',
      subject: 'system:serviceaccount:agents:planner',
    });
    expect(identity.claims).toMatchObject({
      'kubernetes.io.namespace': 'agents',
      'kubernetes.io.pod.name': 'planner-7d9f8c6b5-x2k4q',
      'kubernetes.io.serviceaccount.name': 'planner',
      'kubernetes.io.node.name': 'node-a',
      namespace: 'agents',
      serviceaccount: 'planner',
      pod: 'planner-7d9f8c6b5-x2k4q',
    });
    expect(identity.claims).not.toHaveProperty('kubernetes.io');
  });

  it('Kubernetes: a subject that is not a service account is refused', async () => {
    const claims = { ...platformClaims('kubernetes'), sub: 'system:node:node-a' };
    const issuer = await platformIssuer('cluster', 'kubernetes', claims);
    expect(await refusedReason(issuer, await issuer.sign(stamp(claims)))).toMatch(/service account/);
  });

  it('SPIFFE: a JWT-SVID yields its trust domain and path', async () => {
    const claims = platformClaims('spiffe-jwt-svid');
    const issuer = await platformIssuer('spire', 'spiffe', claims);
    const { identity } = await verifyOne(issuer, await issuer.sign(stamp(claims)));
    expect(identity).toMatchObject({
      issuer: 'spire',
      kind: 'spiffe',
      subject: 'spiffe://example.org/ns/agents/sa/planner',
    });
    expect(identity.claims).toMatchObject({
      trust_domain: 'example.org',
      spiffe_path: '/ns/agents/sa/planner',
    });
  });

  it('SPIFFE: a trust_domain claim in the token cannot override the one in the SPIFFE ID', async () => {
    const claims = { ...platformClaims('spiffe-jwt-svid'), trust_domain: 'evil.org' };
    const issuer = await platformIssuer('spire', 'spiffe', claims);
    const { identity } = await verifyOne(issuer, await issuer.sign(stamp(claims)));
    expect(identity.claims.trust_domain).toBe('example.org');
  });

  it.each([
    ['a subject that is not a SPIFFE ID', { sub: 'planner' }, {}, /not a SPIFFE ID/],
    ['an https subject', { sub: 'https://example.org/ns/agents' }, {}, /not a SPIFFE ID/],
    ['a typ other than JWT or JOSE', {}, { typ: 'at+jwt' }, /typ at\+jwt/],
  ])('SPIFFE: refuses %s', async (_name, override, header, reason) => {
    const claims = { ...platformClaims('spiffe-jwt-svid'), ...override };
    const issuer = await platformIssuer('spire', 'spiffe', claims);
    expect(await refusedReason(issuer, await issuer.sign(stamp(claims), { header }))).toMatch(reason);
  });

  it('an RS256 issuer works', async () => {
    const rsa = await createTestIssuer({ name: 'rsa', alg: 'RS256' });
    const { identity } = await verifyOne(rsa, await rsa.sign(valid(rsa)));
    expect(identity).toMatchObject({ issuer: 'rsa', kind: 'oidc', subject: 'planner' });
  });

  it('an issuer narrowed to ES256 refuses its own RS256 token', async () => {
    const rsa = await createTestIssuer({ name: 'rsa', alg: 'RS256' });
    rsa.config.algorithms = ['ES256'];
    expect(await refusedReason(rsa, await rsa.sign(valid(rsa)))).toMatch(/"alg"/);
  });

  it('a custom subjectClaim names the subject', async () => {
    const issuer = await createTestIssuer({ name: 'idp' });
    issuer.config.subjectClaim = 'email';
    const { identity } = await verifyOne(
      issuer,
      await issuer.sign(valid(issuer, { email: 'alice@example.com' })),
    );
    expect(identity.subject).toBe('alice@example.com');
  });
});

describe('clock skew', () => {
  let h: Harness;
  let clockMs = NOW_MS;
  beforeAll(() => {
    h = harness(configured([agents]), () => clockMs);
  });
  afterAll(() => h.verifier.close());
  beforeEach(() => {
    clockMs = NOW_MS;
    h.rejections.length = 0;
  });

  it('accepts a token expired less than the tolerance (30 s by default) ago', async () => {
    const token = await agents.sign(valid(agents, { iat: NOW_S - 300, exp: NOW_S - 29 }));
    await expect(h.verifier.verify(token)).resolves.toMatchObject({ subject: 'planner' });
  });

  it('accepts a token whose nbf is less than the tolerance ahead', async () => {
    const token = await agents.sign(valid(agents, { nbf: NOW_S + 29 }));
    await expect(h.verifier.verify(token)).resolves.toMatchObject({ subject: 'planner' });
  });

  it('the same token is reusable until it expires, then refused', async () => {
    const token = await agents.sign(valid(agents, { iat: NOW_S, exp: NOW_S + 60 }));
    await expect(h.verifier.verify(token)).resolves.toBeDefined();
    clockMs = NOW_MS + 59_000;
    await expect(h.verifier.verify(token)).resolves.toBeDefined();
    clockMs = NOW_MS + 91_000;
    await expect(h.verifier.verify(token)).rejects.toMatchObject({ code: 'unauthenticated' });
    expect(h.rejections.map((r) => r.reason)).toEqual([expect.stringMatching(/"exp"/)]);
  });
});
